package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The repair on the event. nf_tables tells every listener of its netlink
// multicast group (NFNLGRP_NFTABLES) about each object a transaction
// deleted: `nft flush ruleset`, fw4's flush (which deletes every table),
// `nft delete table inet afconn`, and iptables-nft's -F and -X, which are
// nf_tables transactions too. Firewall.Watch listens, and when one of the
// deletions may have touched ours it runs Ensure at once: the check, and
// when something is missing the restore with every live learned address.
// iptables-legacy and ip sets tell nobody; the daemon's periodic check
// stays as the backstop for them and for a lost notification.

// nftEvent is what matters of one nf_tables notification.
type nftEvent struct {
	msg    uint16 // NFT_MSG_*
	family uint8  // NFPROTO_* of the object's table
	table  string
	set    string // the set of a set element notification
}

// parseNFTEvent decodes a notification's header (the nlmsg type), its
// nfgenmsg and the table (attribute 1 of tables, chains, rules, sets and
// set element lists alike) and set (attribute 2 of set element lists). ok
// is false for messages of other subsystems and for malformed ones.
func parseNFTEvent(typ uint16, data []byte) (ev nftEvent, ok bool) {
	if typ>>8 != unix.NFNL_SUBSYS_NFTABLES || len(data) < 4 {
		return ev, false
	}
	ev.msg, ev.family = typ&0xff, data[0]
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return ev, false
	}
	for ad.Next() {
		switch ad.Type() {
		case 1:
			ev.table = cString(ad.Bytes())
		case 2:
			if ev.msg == unix.NFT_MSG_NEWSETELEM || ev.msg == unix.NFT_MSG_DELSETELEM {
				ev.set = cString(ad.Bytes())
			}
		}
	}
	return ev, ad.Err() == nil
}

// cString is a NUL-terminated netlink string attribute as a Go string.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// touchesNFT tells whether a notification may mean that the NFT backend's
// table, chains, rules or fixed sets lost something. Element deletions in
// the learned sets are ours (refreshes, expiry, Disallow) and are not.
func touchesNFT(ev nftEvent) bool {
	if ev.family != unix.NFPROTO_INET || ev.table != nftTableName {
		return false
	}
	switch ev.msg {
	case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE, unix.NFT_MSG_DELSET:
		return true
	case unix.NFT_MSG_DELSETELEM:
		return ev.set == nftSetUplink || ev.set == "static4" || ev.set == "static6"
	}
	return false
}

// watchable is a backend whose damage nf_tables notifications can tell.
type watchable interface {
	// watchNetNS is the network namespace fd of the backend's sockets (0:
	// the caller's).
	watchNetNS() int
	// touches filters notifications.
	touches(nftEvent) bool
}

func (b *NFT) watchNetNS() int          { return b.nsfd }
func (b *NFT) touches(ev nftEvent) bool { return touchesNFT(ev) }

// watchRcvBuf is the receive buffer the watch asks for. An overflow
// (ENOBUFS) counts as a possible deletion; but while the buffer stays full
// the kernel drops notifications without telling again, so the watch
// filters out the flood it would cause itself (ownElementsFilter).
const watchRcvBuf = 4 << 20

// Watch listens to nf_tables' notifications until ctx ends and runs Ensure
// whenever one may mean that something of ours was removed; repaired is
// called after each Ensure that restored (in the watch's goroutine). It
// returns once listening, with an error when the backend's damage cannot
// be watched (iptables-legacy tells nothing; the caller's periodic check
// covers it) or the socket cannot be opened.
func (f *Firewall) Watch(ctx context.Context, repaired func(error)) error {
	w, ok := f.b.(watchable)
	if !ok {
		return fmt.Errorf("firewall: the %s backend has no change notifications", f.b.Name())
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.watchNetNS()})
	if err != nil {
		return fmt.Errorf("firewall: watch nf_tables: open netlink: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return fmt.Errorf("firewall: watch nf_tables: join its notification group: %w", err)
	}
	_ = c.SetReadBuffer(watchRcvBuf)
	if prog, err := bpf.Assemble(ownElementsFilter()); err == nil {
		_ = c.SetBPF(prog) // without it the watch reads more, and may overflow sooner
	}
	ws := &watchState{kick: make(chan struct{}, 1)}
	f.mu.Lock()
	f.watching = ws
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() { // reader: never waits on a repair
		defer func() {
			f.mu.Lock()
			ws.closed = true // no kick after this (Ensure's deferred one)
			close(ws.kick)
			f.mu.Unlock()
		}()
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !errors.Is(err, unix.ENOBUFS) {
					// A socket that fails otherwise is gone: the periodic
					// check remains.
					return
				}
				ws.noticed.CompareAndSwap(0, time.Now().UnixNano())
				signal(ws.kick)
				continue
			}
			for _, m := range msgs {
				ev, ok := parseNFTEvent(uint16(m.Header.Type), m.Data)
				if ok && w.touches(ev) {
					ws.noticed.CompareAndSwap(0, time.Now().UnixNano())
					signal(ws.kick)
					break
				}
			}
		}
	}()
	go func() { // repairer: one repair at a time, coalescing what came meanwhile
		defer func() {
			f.mu.Lock()
			if f.watching == ws {
				f.watching = nil // the periodic check repairs alone again
			}
			f.mu.Unlock()
		}()
		for range ws.kick {
			if ctx.Err() != nil {
				continue
			}
			if restored, err := f.ensure(ws); restored && repaired != nil {
				repaired(err)
			}
		}
	}()
	return nil
}

// watchState is a running watch, as Ensure and the repairer share it.
type watchState struct {
	kick    chan struct{}
	noticed atomic.Int64 // unix ns of the first notification not yet acted on
	// deferred: Ensure found damage and left it to the watch, which repairs it after
	// watchGrace when no notification came meanwhile (one was lost).
	deferred bool
	closed   bool // kick is closed (under Firewall.mu)
}

// watchGrace is how long Ensure leaves damage it found to a running watch. Without it, a
// periodic check that happened to run between a flush and its notification's arrival repaired
// the flush itself, which then looked noticed by the check (a process short of CPU runs both
// goroutines at once, in any order); with a notification lost it delays the backstop by this.
const watchGrace = 250 * time.Millisecond

// signal makes a pending kick without waiting.
func signal(kick chan struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

// ownElementsFilter is a socket filter that drops the notifications of
// changes to connmgr's learned sets before they reach the watch: a
// restore of 65,536 addresses makes some 200,000 of them, which would
// overflow the socket and hide a deletion that comes meanwhile. nf_tables
// packs the notifications of one transaction into each message it sends
// (up to a page); the filter looks at the first, which for element changes
// reads: nlmsghdr (16 bytes), nfgenmsg (4), the table name attribute
// ("afconn", at 24), the set name attribute (at 36). A transaction that
// starts with a change of our learned elements and deletes more in the
// same batch is left to the periodic check.
func ownElementsFilter() []bpf.Instruction {
	// Loads are big-endian; nlmsg and attribute types are host-endian.
	host16 := func(v uint16) uint32 {
		var b [2]byte
		binary.NativeEndian.PutUint16(b[:], v)
		return uint32(binary.BigEndian.Uint16(b[:]))
	}
	word := func(s string) uint32 { return binary.BigEndian.Uint32([]byte(s)) }
	const accept, drop = 0xffffffff, 0
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 4, Size: 2}, // nlmsg_type
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: host16(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM), SkipTrue: 1},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: host16(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELSETELEM), SkipTrue: 14},
		/* 3 */ bpf.LoadAbsolute{Off: 22, Size: 2}, // first attribute: the table
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: host16(unix.NFTA_SET_ELEM_LIST_TABLE), SkipTrue: 12},
		/* 5 */ bpf.LoadAbsolute{Off: 24, Size: 4},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: word("afco"), SkipTrue: 10},
		/* 7 */ bpf.LoadAbsolute{Off: 28, Size: 4}, // "nn", NUL, padding
		/* 8 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffffff00},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: word("nn\x00\x00"), SkipTrue: 7},
		/* 10 */ bpf.LoadAbsolute{Off: 34, Size: 2}, // second attribute: the set
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: host16(unix.NFTA_SET_ELEM_LIST_SET), SkipTrue: 5},
		/* 12 */ bpf.LoadAbsolute{Off: 36, Size: 4},
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: word("allo"), SkipTrue: 4},
		/* 14 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: word("fwd4"), SkipTrue: 3},
		/* 15 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: word("fwd6"), SkipTrue: 2},
		/* 16 */ bpf.RetConstant{Val: accept},
		/* 17 */ bpf.RetConstant{Val: accept},
		/* 18 */ bpf.RetConstant{Val: drop},
	}
}
