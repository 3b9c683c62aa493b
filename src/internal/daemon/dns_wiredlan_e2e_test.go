package daemon_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// Red team: a LAN client on a wired LAN port (network 'lan' on eth1, no access point) floods
// queries to a trusted resolver, as lanQueryFlood does from the AP's network. Its queries must
// be tracked as a LAN client's, not as the hub's own: the hub's own pending queries must never
// be pushed out (README, DNS bounds) and the hub's lookups must all open their addresses.
func TestE2EDNSWiredLANFlood(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	cloud, err := w.StartDNS(advRecords())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Cloud.IP("addr add "+silentDNS+"/32 dev lo", "addr add 198.18.230.0/24 dev lo"); err != nil {
		t.Fatal(err)
	}
	lan, err := w.AddLAN("eth1")
	if err != nil {
		t.Fatal(err)
	}
	e := startE2E(t, w, "nftables", map[string]string{
		"network":   e2eNetwork + "\nconfig interface 'lan'\n\toption device 'eth1'\n\toption proto 'static'\n\toption ipaddr '198.18.100.1'\n\toption netmask '255.255.255.0'\n",
		"connmgr":   e2eConnmgr("nftables", "1") + fmt.Sprintf("\toption set_maxelem '%d'\n", advMaxElem),
		"whitelist": "*.afero.io\n",
	}, nil)
	a := &adv{e2e: e, lan: lan, cloud: cloud}
	defer a.silentResolver()()
	// The upstream answer takes longer than the flood needs to turn the 4,096-query table over.
	cloud.SetDelay(1500 * time.Millisecond)
	defer cloud.SetDelay(0)
	stop := make(chan struct{})
	sent, wg := a.floodLAN(5000, stop)
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second)
	const tries = 4
	failed := 0
	for i := range tries {
		name, addr := fmt.Sprintf("h-%d.afero.io", i), hubAddr(i).String()
		if ok, _ := a.hubResolves(name, addr); !ok {
			failed++
		}
	}
	st := a.status()
	t.Logf("wired LAN flood: %d sent; bounds %v", sent.Load(), st.Firewall.DNSBounds)
	if failed > 0 || st.Firewall.DNSBounds["pending_evicted"] != 0 {
		t.Fatalf("under a wired LAN client's query flood %d of %d of the hub's lookups opened nothing; bounds %v", failed, tries, st.Firewall.DNSBounds)
	}
}
