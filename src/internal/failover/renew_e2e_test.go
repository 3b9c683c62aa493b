package failover_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
)

// renews is how many gateway-changing DHCP renews TestE2EGatewayRenews makes.
const renews = 100

// TestE2EGatewayRenews: 100 DHCP renews that change eth0's gateway, made the way netifd makes
// them (the old default route deleted, the new one added a moment later, in one ip batch): no
// fail-over, no conntrack flush, no state change, and connmgr's route follows each new
// gateway. After each change netifd (a stand-in object on the test's ubusd) is asked again,
// since it sends no event for such a renew.
func TestE2EGatewayRenews(t *testing.T) {
	r := newRigWith(t, rigOptions{ubus: true}) // the default configuration: firewall on
	eth := r.w.MustUplink("eth0")
	gws := []string{eth.Gateway.String(), "198.18.10.254"}
	if err := eth.Router.IP("addr add " + gws[1] + "/24 dev todev"); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	var current atomic.Value
	current.Store(gws[0])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := ubus.Dial(ctx, r.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	netifd := &ubus.Object{Name: "network.interface.ethnet", Methods: []ubus.Method{{Name: "status",
		Handler: func(context.Context, *ubus.Request) (ubus.Table, error) {
			asked.Add(1)
			return ubus.Table{{Name: "up", Value: true}, {Name: "l3_device", Value: "eth0"},
				{Name: "route", Value: []any{ubus.Table{{Name: "target", Value: "0.0.0.0"}, {Name: "mask", Value: int32(0)},
					{Name: "nexthop", Value: current.Load().(string)}}}},
				{Name: "dns-server", Value: []any{current.Load().(string)}}}, nil
		}}}}
	if _, err := conn.AddObject(ctx, netifd); err != nil {
		t.Fatal(err)
	}

	// An open connection, so a conntrack flush would have entries to delete (and log).
	c := dialEcho(t, r.w)
	if err := c.works(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	mark, changes := r.p.Mark(), r.watch.count()
	for i := range renews {
		old, next := gws[i%2], gws[(i+1)%2]
		current.Store(next)
		if err := r.w.Device.IP(
			fmt.Sprintf("route del default via %s dev eth0 metric %d", old, eth.Metric),
			fmt.Sprintf("route add default via %s dev eth0 metric %d", next, eth.Metric),
		); err != nil {
			t.Fatal(err)
		}
		// connmgr's own default route follows the new gateway.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := r.w.Device.Run("ip", "route", "show", "default", "metric", "0")
			if regexp.MustCompile(`via ` + regexp.QuoteMeta(next) + ` dev eth0`).MatchString(out) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("renew %d: connmgr's default route not via %s: %q\nlog:\n%s", i, next, out, r.p.Log())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // a grace running out would show now
	if err := c.works(5 * time.Second); err != nil {
		t.Errorf("the connection opened before the renews: %v", err)
	}
	log := r.p.Log()
	logSince := func(re string) int {
		n := 0
		for _, l := range strings.Split(log, "\n")[mark:] {
			if regexp.MustCompile(re).MatchString(l) {
				n++
			}
		}
		return n
	}
	failovers := logSince(`msg="switch uplink"`)
	flushes := logSince(`msg="conntrack flush`)
	states := logSince(`msg="uplink state" network=ethnet`)
	t.Logf("%d gateway-changing renews: %d fail-overs, %d conntrack flushes, %d state changes of ethnet, %d default-route changes of device, netifd asked %d times",
		renews, failovers, flushes, states, r.watch.count()-changes, asked.Load())
	if failovers != 0 || flushes != 0 || states != 0 || r.watch.count() != changes {
		t.Fatalf("renews were taken for faults\nlog:\n%s", log)
	}
	if asked.Load() < renews/2 {
		t.Fatalf("netifd asked again %d times after %d gateway changes", asked.Load(), renews)
	}
}
