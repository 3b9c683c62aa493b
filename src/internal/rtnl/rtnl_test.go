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
	r := Route{Family: unix.AF_INET, Dst: netip.MustParsePrefix("198.18.1.0/24"), Gw: netip.MustParseAddr("198.18.1.1"),
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
	rule := Rule{Family: unix.AF_INET, Priority: 9001, Src: netip.MustParsePrefix("198.18.1.2/32"), Table: 300, Action: unix.FR_ACT_TO_TBL}
	rb, err := rule.marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := ParseRule(rb)
	if err != nil || !ok || got != rule {
		t.Fatalf("rule: got %+v %v %v, want %+v", got, ok, err, rule)
	}
	// An IPv4 route's message read as IPv6 has addresses of the wrong
	// size: they are dropped, not misread.
	b[0] = unix.AF_INET6
	u, err = Parse(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: b})
	if ru, ok := u.(RouteUpdate); err != nil || !ok || ru.Dst.IsValid() || ru.Gw.IsValid() || ru.Src.IsValid() {
		t.Fatalf("IPv4 addresses in an IPv6 route: %+v %v", u, err)
	}
	// Another family (here AF_BRIDGE) is not ours to read, and no error.
	b[0] = unix.AF_BRIDGE
	if u, err := Parse(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: b}); u != nil || err != nil {
		t.Fatalf("bridge route: %v %v", u, err)
	}
}

// The same for IPv6: a default route via a link-local gateway (the family
// comes from the gateway), a prefix route with a source, a /128 rule.
func TestRouteRuleRoundTrip6(t *testing.T) {
	for _, r := range []Route{
		{Gw: netip.MustParseAddr("fe80::1"), LinkIndex: 3, Priority: 1, Table: 254, Protocol: 175},
		{Dst: netip.MustParsePrefix("2001:db8:1::/64"), Src: netip.MustParseAddr("2001:db8:1::2"), LinkIndex: 3, Priority: 256, Table: 240, Protocol: unix.RTPROT_RA, Scope: unix.RT_SCOPE_LINK},
	} {
		b, err := r.marshal()
		if err != nil {
			t.Fatal(err)
		}
		u, err := Parse(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: b})
		want := r
		want.Family, want.Type = unix.AF_INET6, unix.RTN_UNICAST
		if err != nil || u != (RouteUpdate{want, false}) {
			t.Fatalf("route: got %+v %v, want %+v", u, err, want)
		}
	}
	rule := Rule{Family: unix.AF_INET6, Priority: 9001, Src: netip.MustParsePrefix("2001:db8:1::2/128"), Table: 241, Action: unix.FR_ACT_TO_TBL}
	rb, err := rule.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := ParseRule(rb); err != nil || !ok || got != rule {
		t.Fatalf("rule: got %+v %v %v, want %+v", got, ok, err, rule)
	}
	// Mixed families are refused, never sent as something else (an IPv6
	// rule without its source would be "from all").
	for _, r := range []Route{
		{Family: unix.AF_INET, Gw: netip.MustParseAddr("fe80::1")},
		{Dst: netip.MustParsePrefix("2001:db8::/32"), Gw: netip.MustParseAddr("198.18.0.1")},
	} {
		if _, err := r.marshal(); err == nil {
			t.Errorf("route %+v: no error", r)
		}
	}
	bad := Rule{Family: unix.AF_INET, Src: netip.MustParsePrefix("2001:db8::1/128"), Table: 240}
	if _, err := bad.marshal(); err == nil {
		t.Errorf("rule %+v: no error", bad)
	}
}

// IFA_FLAGS decide whether an IPv6 address is usable; IPv4 addresses go
// by scope.
func TestAddrUsable(t *testing.T) {
	for _, c := range []struct {
		a     string
		scope uint8
		flags uint32
		want  bool
	}{
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_PERMANENT, true},
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_OPTIMISTIC, true},
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_TENTATIVE, false},
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DEPRECATED, false},
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE, false},
		{"2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE | unix.IFA_F_DEPRECATED, false},
		{"fe80::2/64", unix.RT_SCOPE_LINK, unix.IFA_F_PERMANENT, false},
		{"::1/128", unix.RT_SCOPE_HOST, unix.IFA_F_PERMANENT, false},
		{"198.18.0.2/24", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DEPRECATED, true},
		{"127.0.0.1/8", unix.RT_SCOPE_HOST, 0, false},
	} {
		a := Addr{Prefix: netip.MustParsePrefix(c.a), Scope: c.scope, Flags: c.flags}
		if got := a.Usable(); got != c.want {
			t.Errorf("%s scope %d flags %#x: usable %v, want %v", c.a, c.scope, c.flags, got, c.want)
		}
		// Deprecated: an IPv6 global address unusable for its preferred lifetime alone.
		wantDep := c.scope == unix.RT_SCOPE_UNIVERSE && c.a[0] == '2' && c.flags == unix.IFA_F_DEPRECATED
		if got := a.Deprecated(); got != wantDep {
			t.Errorf("%s scope %d flags %#x: deprecated %v, want %v", c.a, c.scope, c.flags, got, wantDep)
		}
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
	for _, seed := range []struct {
		typ     uint16
		marshal func() ([]byte, error)
	}{
		{unix.RTM_NEWROUTE, (&Route{Dst: netip.MustParsePrefix("198.18.0.0/15"), Gw: netip.MustParseAddr("198.18.0.1"), Table: 254}).marshal},
		{unix.RTM_NEWRULE, (&Rule{Priority: 9000, Src: netip.MustParsePrefix("198.18.0.2/32"), Table: 240}).marshal},
		{unix.RTM_NEWROUTE, (&Route{Dst: netip.MustParsePrefix("2001:db8::/32"), Gw: netip.MustParseAddr("fe80::1"), Table: 254}).marshal},
		{unix.RTM_NEWRULE, (&Rule{Priority: 9000, Src: netip.MustParsePrefix("2001:db8::2/128"), Table: 240}).marshal},
	} {
		b, _ := seed.marshal()
		f.Add(seed.typ, b)
	}
	f.Add(uint16(unix.RTM_NEWADDR), append([]byte{unix.AF_INET6, 64, 0x40, 0, 2, 0, 0, 0, 20, 0, 1, 0},
		append(netip.MustParseAddr("2001:db8::2").AsSlice(), 8, 0, 8, 0, 0x80, 0, 0, 0)...))
	f.Add(uint16(unix.RTM_NEWLINK), append(make([]byte, 16), 9, 0, 3, 0, 'e', 't', 'h', 0, 5, 0, 16, 0, 6, 0, 0, 0))
	f.Add(uint16(unix.RTM_NEWADDR), []byte{unix.AF_INET, 24, 0, 0, 2, 0, 0, 0, 8, 0, 2, 0, 198, 18, 0, 2})
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		u, err := Parse(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ)}, Data: data})
		if err != nil && u != nil {
			t.Fatalf("both an update and an error: %v", err)
		}
		switch u := u.(type) {
		case AddrUpdate:
			if !u.Prefix.IsValid() {
				t.Fatalf("address %v", u.Prefix)
			}
		case RouteUpdate:
			for _, a := range []netip.Addr{u.Dst.Addr(), u.Gw, u.Src} {
				if a.IsValid() && !ofFamily(a, u.Family) {
					t.Fatalf("address %v in a route of family %d", a, u.Family)
				}
			}
			if u.Dst.IsValid() && u.Dst.Bits() < 0 {
				t.Fatalf("destination %v", u.Dst)
			}
		}
	})
}
