package netmon

import (
	"net/netip"
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
		if ok, gw := v.bestRoute(2, true); !ok || gw != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, ok, gw, c.want)
		}
	}
}
