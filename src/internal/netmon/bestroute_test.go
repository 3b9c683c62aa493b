package netmon

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Of equal-metric default routes: the preferred router, then the one renewed
// last (a router swapped without a final RA leaves its route, last renewed
// before its successor's), then the lowest gateway; expired ones never.
func TestBestRouteTieBreak(t *testing.T) {
	now := time.Unix(10000, 0)
	old, next := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::9")
	for _, c := range []struct {
		name      string
		oldI, new routeInfo
		want      netip.Addr
	}{
		{"swapped router: later expiry wins over lower gateway", routeInfo{until: now.Add(1781 * time.Second)}, routeInfo{until: now.Add(1798 * time.Second)}, next},
		{"same expiry: lower gateway", routeInfo{until: now}, routeInfo{until: now}, old},
		{"never expires beats an RA's", routeInfo{}, routeInfo{until: now.Add(time.Hour)}, old},
		{"preference first", routeInfo{pref: 1, until: now}, routeInfo{until: now.Add(time.Hour)}, old},
		{"expired never", routeInfo{until: now.Add(time.Hour)}, routeInfo{until: now, expired: true}, old},
	} {
		v := newView()
		v.routes[2] = map[defRoute]routeInfo{
			{gw: old, metric: 10, v6: true}:  c.oldI,
			{gw: next, metric: 10, v6: true}: c.new,
		}
		ok, gw, routers := v.bestRoute(2, true)
		if !ok || gw != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, ok, gw, c.want)
		}
		// Every unexpired router follows, in the same order.
		want := []netip.Addr{c.want}
		if other := map[netip.Addr]netip.Addr{old: next, next: old}[c.want]; !c.new.expired {
			want = append(want, other)
		}
		if !slices.Equal(routers, want) {
			t.Errorf("%s: routers %v, want %v", c.name, routers, want)
		}
	}
}

// The routers of a device's default routes: lowest metric first, each gateway once, the other
// family's and expired ones never.
func TestRoutersOrder(t *testing.T) {
	now := time.Unix(10000, 0)
	a, b, c := netip.MustParseAddr("fe80::a"), netip.MustParseAddr("fe80::b"), netip.MustParseAddr("fe80::c")
	v := newView()
	v.routes[2] = map[defRoute]routeInfo{
		{gw: a, metric: 1024, v6: true}:                     {},
		{gw: b, metric: 10, v6: true}:                       {until: now},
		{gw: c, metric: 10, v6: true}:                       {until: now, pref: 1},
		{gw: a, metric: 20, v6: true}:                       {},
		{gw: b, metric: 5, v6: true}:                        {expired: true},
		{gw: netip.MustParseAddr("198.18.10.1"), metric: 1}: {},
	}
	ok, gw, routers := v.bestRoute(2, true)
	if want := []netip.Addr{c, b, a}; !ok || gw != c || !slices.Equal(routers, want) {
		t.Fatalf("%v %v %v, want true %v %v", ok, gw, routers, c, want)
	}
	if ok, _, routers := v.bestRoute(3, true); ok || routers != nil {
		t.Fatalf("a device without routes: %v %v", ok, routers)
	}
}
