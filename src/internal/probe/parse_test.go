package probe

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/afero/af-conn/internal/checksum"
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
		{"wan", autoPath, addrs("198.18.10.1")},   // IPv6 dropped
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
	req := icmpEcho(0x1234, 7)
	if checksum.Internet(req) != 0 {
		t.Fatal("request checksum does not verify")
	}
	if _, _, ok := parseEchoReply(req); ok {
		t.Fatal("a request is not a reply")
	}
	rep := append([]byte{}, req...)
	rep[0] = 0
	id, seq, ok := parseEchoReply(rep)
	if !ok || id != 0x1234 || seq != 7 {
		t.Fatalf("reply: %x %d %v", id, seq, ok)
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
	rep := icmpEcho(1, 2)
	rep[0] = 0
	f.Add(rep)
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, seq, ok := parseEchoReply(b)
		if ok && (len(b) < 8 || id != uint16(b[4])<<8|uint16(b[5]) || seq != uint16(b[6])<<8|uint16(b[7])) {
			t.Fatalf("bad parse of %x", b)
		}
	})
}
