package rtnl

import (
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// What we send is what we read back: the message of a route or rule, as
// the kernel echoes it to subscribers, parses to the same fields.
func TestRouteRuleRoundTrip(t *testing.T) {
	r := Route{Dst: netip.MustParsePrefix("198.18.1.0/24"), Gw: netip.MustParseAddr("198.18.1.1"),
		Src: netip.MustParseAddr("198.18.1.2"), LinkIndex: 7, Priority: 20, Table: 241, Protocol: 175,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST}
	b, err := r.marshal()
	if err != nil {
		t.Fatal(err)
	}
	u, err := Parse(netlink.Message{Header: netlink.Header{Type: unix.RTM_DELROUTE}, Data: b})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u, (RouteUpdate{r, true}); got != want {
		t.Fatalf("route: got %+v, want %+v", got, want)
	}
	rule := Rule{Priority: 9001, Src: netip.MustParsePrefix("198.18.1.2/32"), Table: 300, Action: unix.FR_ACT_TO_TBL}
	got, ok, err := ParseRule(rule.marshal())
	if err != nil || !ok || got != rule {
		t.Fatalf("rule: got %+v %v %v, want %+v", got, ok, err, rule)
	}
	// An IPv6 route is not ours to read, and no error.
	b[0] = unix.AF_INET6
	if u, err := Parse(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: b}); u != nil || err != nil {
		t.Fatalf("IPv6 route: %v %v", u, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, m := range []netlink.Message{
		{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: make([]byte, 15)},
		{Header: netlink.Header{Type: unix.RTM_NEWADDR}, Data: []byte{unix.AF_INET}},
		{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: []byte{unix.AF_INET, 0, 0}},
		// A route whose attribute claims more bytes than there are.
		{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: append([]byte{unix.AF_INET, 0, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0}, 40, 0, 1, 0, 198, 18)},
	} {
		if _, err := Parse(m); err == nil {
			t.Errorf("type %d, % x: no error", m.Header.Type, m.Data)
		}
	}
}

func FuzzParse(f *testing.F) {
	r := Route{Dst: netip.MustParsePrefix("198.18.0.0/15"), Gw: netip.MustParseAddr("198.18.0.1"), Table: 254}
	b, _ := r.marshal()
	f.Add(uint16(unix.RTM_NEWROUTE), b)
	rule := Rule{Priority: 9000, Src: netip.MustParsePrefix("198.18.0.2/32"), Table: 240}
	f.Add(uint16(unix.RTM_NEWRULE), rule.marshal())
	f.Add(uint16(unix.RTM_NEWLINK), append(make([]byte, 16), 9, 0, 3, 0, 'e', 't', 'h', 0, 5, 0, 16, 0, 6, 0, 0, 0))
	f.Add(uint16(unix.RTM_NEWADDR), []byte{unix.AF_INET, 24, 0, 0, 2, 0, 0, 0, 8, 0, 2, 0, 198, 18, 0, 2})
	f.Add(uint16(0), []byte{1, 0, 8, 0, 6, 0, 1, 0, 198, 18, 0, 2})
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		if typ == 0 { // the payload of a conntrack entry
			_, _ = ParseFlow(data)
			return
		}
		u, err := Parse(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ)}, Data: data})
		if err != nil && u != nil {
			t.Fatalf("both an update and an error: %v", err)
		}
		switch u := u.(type) {
		case AddrUpdate:
			if !u.Prefix.Addr().Is4() || u.Prefix.Bits() < 0 {
				t.Fatalf("address %v", u.Prefix)
			}
		case RouteUpdate:
			if u.Dst.IsValid() && !u.Dst.Addr().Is4() {
				t.Fatalf("destination %v", u.Dst)
			}
		}
	})
}
