package daemon_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/testbed"
)

// End-to-end, the real binary on both backends: a pinhole refreshed past its first expiry
// never leaves the set; 65,536 learned addresses (the default set_maxelem) come back after
// `nft flush ruleset` / iptables -F, fw4's flush, a reload that replaces the sets and
// `connmgr fw restore`; flushes are repaired on nf_tables' notification, not at the
// periodic check.

// fw4Flush is what `fw4 flush` (and so /etc/init.d/firewall stop) runs: every table deleted,
// one transaction each; no include runs afterwards.
const fw4Flush = `nft list tables | while read dummy family table; do nft delete table "$family" "$table"; done`

const (
	scaleNames   = 8192 // names of 8 addresses each: 198.18.0.0/16
	scalePerName = 8
	refreshAddr  = "198.19.0.60" // a cloud address with the greeting server, not otherwise open
	lockedAddr   = "198.19.0.61" // never opened
)

func scaleRecords() []testbed.Record {
	rs := append([]testbed.Record{}, e2eRecords...)
	rs = append(rs, testbed.Record{Name: "refresh.afero.io", TTL: 1, Addr: netip.MustParseAddr(refreshAddr)})
	for i := 0; i < scaleNames*scalePerName; i++ {
		rs = append(rs, testbed.Record{Name: fmt.Sprintf("s%d.scale.afero.io", i/scalePerName), TTL: 3600,
			Addr: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})})
	}
	return rs
}

func TestE2EFirewallScale(t *testing.T) {
	// It failed 3 of 8 runs at 943f118 under load: 65,528 of 65,536 learned (nf_tables counted
	// an expired element against the full set), a repair taken by the periodic check before the
	// notification arrived or reported with an overtaking restore's progress, and `connmgr fw
	// restore` over its 5 s ubus timeout (65,536 took 6-8 s at load average 19).
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, backend)
			keepLogOnFailure(t, e)
			e.dns.SetRecords(scaleRecords())
			e.refreshPastExpiry()
			e.fillSet()
			e.scaleFlush("flush", nil)
			e.scaleFlush("fw4 flush", []string{"sh", "-c", fw4Flush})
			e.scaleReload()
			e.scaleRestore()
		})
	}
}

// refreshPastExpiry resolves a name of TTL 1 s (pinhole 3 s with dns_grace 2 s) every two
// seconds for 7 s, as the shipped configuration re-resolves its echo host (TTL 60 s, pinhole
// 90 s) every 60 s: its address must be in the set all along and connections must pass.
func (e *e2e) refreshPastExpiry() {
	e.t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			if _, err := e.w.ResolveA("refresh.afero.io"); err != nil {
				e.t.Error(err)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	deadline := time.Now().Add(200 * time.Millisecond)
	for !e.inSet(refreshAddr) {
		if time.Now().After(deadline) {
			e.t.Fatalf("refresh.afero.io not opened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t0 := time.Now()
	for time.Since(t0) < 7*time.Second {
		if !e.inSet(refreshAddr) {
			e.t.Fatalf("%v after it was opened, refreshed every 2 s with 3 s, %s left the set", time.Since(t0).Round(time.Millisecond), refreshAddr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.connect(refreshAddr, 5*time.Second); err != nil {
		e.t.Fatalf("connect to the refreshed %s: %v", refreshAddr, err)
	}
}

// inSet asks the kernel whether addr is in the learned set. nft's get fails with EINTR
// ("Interrupted system call") when a transaction (a refresh of this very address) changes the
// ruleset's generation while it asks: it is asked again then, as nft's own dumps do.
func (e *e2e) inSet(addr string) bool {
	for {
		var out string
		var err error
		if e.backend == "nftables" {
			out, err = e.w.Device.Run("nft", "get", "element", "inet", "afconn", "allow4", "{ "+addr+" }")
		} else {
			out, err = e.w.Device.Run("ipset", "test", "afconn_allow4", addr)
		}
		if err != nil && strings.Contains(out+err.Error(), "Interrupted system call") {
			continue
		}
		return err == nil
	}
}

// fillSet resolves every scale name (8 at a time) until the set holds set_maxelem addresses.
func (e *e2e) fillSet() {
	e.t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= scaleNames {
					return
				}
				if _, err := e.w.ResolveA(fmt.Sprintf("s%d.scale.afero.io", i)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		e.t.Fatalf("%d of %d lookups failed", failed.Load(), scaleNames)
	}
	e.waitCount("after the lookups", firewall.DefaultMaxElem)
}

// kernelCount is the number of addresses in the learned set.
func (e *e2e) kernelCount() int {
	e.t.Helper()
	h, err := os.Open("/run/netns/" + e.w.Device.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	defer h.Close()
	var b firewall.Backend
	if e.backend == "nftables" {
		b, err = firewall.NewNFT(firewall.NFTNetNS(int(h.Fd())))
	} else {
		b, err = firewall.NewIPT(firewall.IPTNetNS(int(h.Fd()), e.w.Device.Do))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer b.Close()
	c, err := b.Counts()
	if err != nil {
		return -1 // flushed, until the daemon puts it back
	}
	return c["allow4"]
}

func (e *e2e) waitCount(step string, want int) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := e.kernelCount()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %d learned addresses in the kernel, want %d", step, n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scaleFlush removes the firewall (damage, or the backend's usual flush) and wants every
// learned address back and the lock-down in force, repaired on nf_tables' notification.
func (e *e2e) scaleFlush(step string, damage []string) {
	e.t.Helper()
	mark := e.p.Mark()
	if damage == nil {
		damage = []string{"nft", "flush", "ruleset"}
		if e.backend != "nftables" {
			damage = []string{"sh", "-c", "iptables -F && ip6tables -F"}
		}
	}
	e.w.Device.MustRun(e.t, damage...)
	line := e.waitLog(mark, `firewall rules were removed.*noticed_by="nf_tables event".* restored=65536 refused=0`)
	e.t.Logf("%s: %s", step, line[strings.Index(line, "noticed_by"):])
	e.waitCount(step, firewall.DefaultMaxElem)
	e.mustDrop(lockedAddr)
	if err := e.connect("198.18.200.1", 5*time.Second); err != nil {
		e.t.Fatalf("%s: connect to a learned address: %v", step, err)
	}
}

// scaleReload doubles set_maxelem: the sets are made anew and the record fills them again.
func (e *e2e) scaleReload() {
	e.t.Helper()
	mark := e.p.Mark()
	conf := e2eConnmgr(e.backend, "1") + "\toption set_maxelem '131072'\n"
	if err := os.WriteFile(filepath.Join(e.dir, "connmgr"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := e.p.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
	e.waitLog(mark, `msg=reloaded`)
	e.waitCount("reload with set_maxelem 131072", firewall.DefaultMaxElem)
	e.mustDrop(lockedAddr)
}

// scaleRestore: the firewall include's `connmgr fw restore` returns with everything back.
func (e *e2e) scaleRestore() {
	e.t.Helper()
	if _, err := e.w.Device.Run("nft", "flush", "ruleset"); err != nil {
		e.t.Fatal(err)
	}
	out, err := e.w.Device.Run(testbed.Connmgr(e.t), "fw", "-s", filepath.Join(e.dir, "ubus.sock"), "restore")
	if err != nil {
		e.t.Fatalf("connmgr fw restore: %v: %s", err, out)
	}
	if n := e.kernelCount(); n != firewall.DefaultMaxElem {
		e.t.Fatalf("connmgr fw restore returned with %d learned addresses in the kernel, want %d", n, firewall.DefaultMaxElem)
	}
	e.mustDrop(lockedAddr)
	if regexp.MustCompile(`refused=[1-9]`).MatchString(e.p.Log()) {
		e.t.Fatalf("some learned addresses were refused:\n%s", e.p.Log())
	}
}

// keepLogOnFailure writes the daemon's log (debug level: every reply judged) to a file when the
// test fails, and names it: too long for the test's output.
func keepLogOnFailure(t *testing.T, e *e2e) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		f, err := os.CreateTemp("", "connmgr-"+strings.ReplaceAll(t.Name(), "/", "-")+"-*.log")
		if err != nil {
			t.Log(err)
			return
		}
		defer f.Close()
		_, _ = f.WriteString(e.p.Log())
		t.Logf("connmgr's log: %s", f.Name())
	})
}
