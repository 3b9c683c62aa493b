package probe

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/afero/af-conn/internal/checksum"
	"github.com/afero/af-conn/internal/uplink"
)

const auto = `# Interface wan
nameserver 198.18.10.1
nameserver 2001:db8::1
search lan
# Interface wwan
nameserver 198.18.30.1
 nameserver   198.18.30.2  
nameserver bogus
`

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestParseResolvConf(t *testing.T) {
	cases := []struct {
		iface string
		want  []netip.Addr
	}{
		{"wan", addrs("198.18.10.1", "2001:db8::1")},
		{"wwan", addrs("198.18.30.1", "198.18.30.2")},
		{"lan", nil},
		{"", addrs("198.18.10.1", "2001:db8::1", "198.18.30.1", "198.18.30.2")},
	}
	for _, c := range cases {
		if got := ParseResolvConf([]byte(auto), c.iface); !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.iface, got, c.want)
		}
	}
}

func TestDNSSourceOrder(t *testing.T) {
	dir := t.TempDir()
	autoPath, etcPath := filepath.Join(dir, "auto"), filepath.Join(dir, "etc")
	os.WriteFile(autoPath, []byte(auto), 0o644)
	os.WriteFile(etcPath, []byte("nameserver 127.0.0.1\nnameserver 198.18.99.1\n"), 0o644)
	ubus := func(iface string) ([]netip.Addr, error) {
		if iface == "stanet" {
			return addrs("198.18.20.1"), nil
		}
		return nil, os.ErrNotExist
	}
	s := DNSSource{Ubus: ubus, AutoPath: autoPath, EtcPath: etcPath}
	for _, c := range []struct {
		iface, from string
		want        []netip.Addr
	}{
		{"stanet", "netifd", addrs("198.18.20.1")},
		{"wan", autoPath, addrs("198.18.10.1", "2001:db8::1")},
		{"ethnet", etcPath, addrs("198.18.99.1")}, // loopback dropped
	} {
		got, from, err := s.Servers(c.iface)
		if err != nil || from != c.from || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v from %q (%v), want %v from %q", c.iface, got, from, err, c.want, c.from)
		}
	}
	os.WriteFile(etcPath, []byte("nameserver 127.0.0.1\n"), 0o644)
	if _, _, err := s.Servers("ethnet"); err == nil {
		t.Error("no usable server: want an error")
	}
}

func TestEchoReplyParse(t *testing.T) {
	req := icmpEcho(uplink.IPv4, 0x1234, 7)
	if checksum.Internet(req) != 0 {
		t.Fatal("request checksum does not verify")
	}
	for _, f := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
		req := icmpEcho(f, 0x1234, 7)
		if len(req) != 16 || req[0] != map[uplink.Family]byte{uplink.IPv4: 8, uplink.IPv6: 128}[f] || string(req[8:]) != "af-conn!" {
			t.Fatalf("%v request %x", f, req)
		}
		if _, _, ok := parseEchoReply(f, req); ok {
			t.Fatalf("%v: a request is not a reply", f)
		}
		rep := append([]byte{}, req...)
		rep[0] = echoReply[f]
		id, seq, ok := parseEchoReply(f, rep)
		if !ok || id != 0x1234 || seq != 7 {
			t.Fatalf("%v reply: %x %d %v", f, id, seq, ok)
		}
		other := uplink.IPv4 + uplink.IPv6 - f
		if _, _, ok := parseEchoReply(other, rep); ok {
			t.Fatalf("%v reply taken for an %v one", f, other)
		}
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte(auto), "wan")
	f.Add([]byte("nameserver fe80::1%eth0\n"), "")
	f.Add([]byte("# Interface \n\x00nameserver"), "")
	f.Fuzz(func(t *testing.T, b []byte, iface string) {
		for _, a := range ParseResolvConf(b, iface) {
			if !a.IsValid() {
				t.Fatalf("invalid address from %q", b)
			}
		}
	})
}

func FuzzParseEchoReply(f *testing.F) {
	for _, fam := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
		rep := icmpEcho(fam, 1, 2)
		rep[0] = echoReply[fam]
		f.Add(rep, fam == uplink.IPv6)
	}
	f.Add([]byte{0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := uplink.IPv4
		if v6 {
			fam = uplink.IPv6
		}
		id, seq, ok := parseEchoReply(fam, b)
		if ok && (len(b) < 8 || b[0] != echoReply[fam] || id != uint16(b[4])<<8|uint16(b[5]) || seq != uint16(b[6])<<8|uint16(b[7])) {
			t.Fatalf("bad parse of %x", b)
		}
	})
}
