package firewall

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/testbed"
)

// nftNotification builds one nf_tables notification as the kernel sends
// it: nlmsghdr, nfgenmsg, then the table and (for elements) set attributes.
func nftNotification(t testing.TB, msg uint16, family uint8, table, set string) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.String(1, table)
	if set != "" {
		ae.String(2, set)
		ae.Bytes(unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, nil)
	}
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	data := append([]byte{family, 0, 0, 0}, attrs...)
	b := make([]byte, 16, 16+len(data))
	binary.NativeEndian.PutUint32(b[0:], uint32(16+len(data)))
	binary.NativeEndian.PutUint16(b[4:], unix.NFNL_SUBSYS_NFTABLES<<8|msg)
	return append(b, data...)
}

func TestNFTEventFilter(t *testing.T) {
	prog, err := bpf.Assemble(ownElementsFilter())
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(ownElementsFilter())
	if err != nil || len(prog) == 0 {
		t.Fatal(err)
	}
	for _, c := range []struct {
		msg      uint16
		family   uint8
		table    string
		set      string
		pass     bool
		touchNFT bool
		touchIPT bool
	}{
		{unix.NFT_MSG_NEWSETELEM, unix.NFPROTO_INET, "afconn", "allow4", false, false, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "afconn", "allow6", false, false, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "afconn", "fwd4", false, false, false},
		{unix.NFT_MSG_NEWSETELEM, unix.NFPROTO_INET, "afconn", "fwd6", false, false, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "afconn", "static4", true, true, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "afconn", "uplinks", true, true, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "afconnx", "allow4", true, false, false},
		{unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, "fw4", "allow4", true, false, false},
		{unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "afconn", "", true, true, false},
		{unix.NFT_MSG_DELCHAIN, unix.NFPROTO_INET, "afconn", "", true, true, false},
		{unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "afconn", "", true, true, false},
		{unix.NFT_MSG_DELSET, unix.NFPROTO_INET, "afconn", "", true, true, false},
		{unix.NFT_MSG_NEWRULE, unix.NFPROTO_INET, "afconn", "", true, false, false},
		{unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "fw4", "", true, false, false},
		{unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, "filter", "", true, false, true},
		{unix.NFT_MSG_DELCHAIN, unix.NFPROTO_IPV6, "filter", "", true, false, true},
		{unix.NFT_MSG_DELTABLE, unix.NFPROTO_IPV4, "filter", "", true, false, true},
		{unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, "nat", "", true, false, false},
	} {
		b := nftNotification(t, c.msg, c.family, c.table, c.set)
		n, err := vm.Run(b)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.pass {
			t.Errorf("filter on %+v: pass=%v, want %v", c, n > 0, c.pass)
		}
		ev, ok := parseNFTEvent(binary.NativeEndian.Uint16(b[4:]), b[16:])
		if !ok || ev.table != c.table || ev.set != c.set || ev.msg != c.msg {
			t.Errorf("parse %+v: %+v ok=%v", c, ev, ok)
		}
		if touchesNFT(ev) != c.touchNFT || touchesIPT(ev) != c.touchIPT {
			t.Errorf("%+v: touches nft %v ipt %v", c, touchesNFT(ev), touchesIPT(ev))
		}
	}
}

// FuzzNFTEvent: notification bytes from the kernel never crash the watch.
func FuzzNFTEvent(f *testing.F) {
	f.Add(uint16(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELTABLE), nftNotification(f, unix.NFT_MSG_DELTABLE, 1, "afconn", "")[16:])
	f.Add(uint16(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELSETELEM), nftNotification(f, unix.NFT_MSG_DELSETELEM, 1, "afconn", "static4")[16:])
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		if ev, ok := parseNFTEvent(typ, data); ok {
			touchesNFT(ev)
			touchesIPT(ev)
		}
	})
}

// FuzzCountElements: a set dump message never crashes Counts.
func FuzzCountElements(f *testing.F) {
	f.Add(nftNotification(f, unix.NFT_MSG_NEWSETELEM, 1, "afconn", "allow4")[16:])
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := countElements(data)
		if err == nil && n < 0 {
			t.Fatal("negative count")
		}
	})
}

// TestNFTEventFilterKernel: on the real kernel, the filter drops the
// notifications of our learned elements and lets a flush of a fixed set
// through.
func TestNFTEventFilterKernel(t *testing.T) {
	ns := testbed.NewNS(t, "afc-fwf")
	fd, err := unix.Open("/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	b, err := NewNFT(NFTNetNS(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer b.Teardown()
	if _, err := b.Setup(Policy{Uplinks: []string{"eth0"}, Static: nil}); err != nil {
		t.Fatal(err)
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		t.Fatal(err)
	}
	prog, _ := bpf.Assemble(ownElementsFilter())
	if err := c.SetBPF(prog); err != nil {
		t.Fatal(err)
	}
	var ps []Pinhole
	for i := 0; i < 3000; i++ {
		ps = append(ps, Pinhole{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), TTL: 3600e9, Comment: "x.afero.io"})
	}
	if err := b.Add(ps); err != nil {
		t.Fatal(err)
	}
	b.conn.DelTable(b.table) // a deletion after them: the first thing through the filter
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	elems, other := 0, 0
	for other == 0 {
		msgs, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ev, _ := parseNFTEvent(uint16(m.Header.Type), m.Data)
			switch {
			case ev.set == "allow4":
				elems++
			case ev.msg == unix.NFT_MSG_DELTABLE || ev.msg == unix.NFT_MSG_DELSET || ev.msg == unix.NFT_MSG_DELCHAIN || ev.msg == unix.NFT_MSG_DELRULE:
				other++
			}
		}
	}
	if elems != 0 {
		t.Errorf("%d notifications of our own learned elements passed the filter", elems)
	}
}
