package firewall_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// fullSet is set_maxelem learned addresses, as DNS answers bring them:
// many pinholes, each with a host name comment.
func fullSet(n int, forward bool) []firewall.Pinhole {
	ps := make([]firewall.Pinhole, 0, n)
	for i := 0; i < n; i++ {
		ps = append(ps, firewall.Pinhole{Addr: benchAddr(i), TTL: time.Hour + time.Duration(i)*time.Millisecond,
			Forward: forward, Comment: fmt.Sprintf("n%d.scale.afero.io", i/8)})
	}
	return ps
}

// TestScaleFullSet takes 65,536 learned addresses (the default set_maxelem)
// through everything that puts them into the kernel again: a flush and the
// repair, an explicit restore (fw reload's include), a reload with another
// policy, a changed set_maxelem, and a switch to the other backend.
func TestScaleFullSet(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		if kind == "iptables-legacy" {
			t.Skip("same sets as iptables")
		}
		const n = firewall.DefaultMaxElem
		ns := fwtest.NewNS(t, "afc-fws")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		if err := f.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		want := func(step string, f *firewall.Firewall) {
			t.Helper()
			st := f.Stats(true)
			if st.Learned4 != n || st.Kernel["allow4"] != n {
				t.Fatalf("%s: record %d, kernel %d learned addresses, want %d (%+v)", step, st.Learned4, st.Kernel["allow4"], n, st)
			}
		}
		if err := f.AllowAll(fullSet(n, false)); err != nil {
			t.Fatalf("allow %d addresses in one change: %v", n, err)
		}
		want("allow", f)
		fwtest.Flush(t, ns, kind)
		if restored, err := f.Ensure(); !restored || err != nil {
			t.Fatalf("Ensure after flush: restored=%v err=%v", restored, err)
		}
		want("after flush", f)
		if err := f.Restore(); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		want("restore", f)
		p := testPolicy
		p.Static = append(p.Static, netip.MustParsePrefix("198.19.5.0/24"))
		if err := f.Setup(p); err != nil {
			t.Fatalf("reload: %v", err)
		}
		want("reload", f)
		p.MaxElem = 2 * n
		if err := f.Setup(p); err != nil {
			t.Fatalf("reload with a larger set_maxelem: %v", err)
		}
		want("set_maxelem changed", f)

		// Backend switch: a new firewall on the other backend takes the record.
		other := "nftables"
		if kind == "nftables" {
			other = "iptables"
		}
		ns2 := fwtest.NewNS(t, "afc-fws")
		g := firewall.New(fwtest.NewBackend(t, ns2, other), nil)
		g.Adopt(f)
		if err := g.Setup(p); err != nil {
			t.Fatalf("switch to %s: %v", other, err)
		}
		want("backend switch", g)
	})
}

// TestRefreshPastExpiry re-learns a pinhole with the same short lifetime
// every second, as DNS answers of a name re-resolved before it expires do:
// the pinhole must live past its first expiry and traffic must pass.
func TestRefreshPastExpiry(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		w := newWorld(t)
		f := firewall.New(fwtest.NewBackend(t, w.dev, kind), nil)
		if err := f.Setup(firewall.Policy{Uplinks: []string{"eth0"}}); err != nil {
			t.Fatal(err)
		}
		x := a("198.18.0.3")
		start := time.Now()
		for i := 0; i < 4; i++ {
			if err := f.Allow(x, 2*time.Second, false); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second)))
		}
		// 4 s after the first add, 1 s after the last refresh.
		if k := f.Stats(true).Kernel["allow4"]; k != 1 {
			t.Fatalf("%v after the first add, refreshed every second with 2 s: %d elements in the kernel, want 1", time.Since(start).Round(time.Millisecond), k)
		}
		expect(t, "device -> refreshed 198.18.0.3:8080", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialOK), true)
	})
}

// TestRestoreKeepsRecord: a restore the kernel refuses in part (set_maxelem
// lowered below what was learned) puts in what fits, keeps the record of
// every address and says what was refused; raising the bound again puts
// them all back.
func TestRestoreKeepsRecord(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		if kind == "iptables-legacy" {
			t.Skip("same sets as iptables")
		}
		ns := fwtest.NewNS(t, "afc-fwk")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		p := testPolicy
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		const n = 3000
		if err := f.AllowAll(fullSet(n, false)); err != nil {
			t.Fatal(err)
		}
		p.MaxElem = 1000
		err := f.Setup(p)
		if !errors.Is(err, firewall.ErrSetFull) {
			t.Fatalf("set-up into a set of 1000: err = %v, want ErrSetFull", err)
		}
		// What fits goes in; the rest is refused and stays recorded.
		fit := firewall.KernelRoom(f.Backend(), 1000)
		r := f.LastRestore()
		if r.Learned != n || r.Restored != fit || r.Failed != n-fit || r.Err == "" {
			t.Fatalf("last restore %+v, want %d learned, %d restored, %d refused", r, n, fit, n-fit)
		}
		if k := f.Stats(true).Kernel["allow4"]; k != fit {
			t.Fatalf("kernel holds %d, want the %d that fit", k, fit)
		}
		if st := f.Stats(false); st.Learned4 != n {
			t.Fatalf("record after the refused restore: %d addresses, want %d", st.Learned4, n)
		}
		p.MaxElem = 0
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(true); st.Learned4 != n || st.Kernel["allow4"] != n {
			t.Fatalf("after raising set_maxelem: record %d, kernel %d, want %d", st.Learned4, st.Kernel["allow4"], n)
		}
	})
}

// TestFullSetExpired: a learned set holding set_maxelem addresses, one of which has just expired,
// takes a new one while the set keeps changing. nf_tables counts an expired element against the
// set's size until its garbage collection, which every commit meanwhile aborts: a set made
// exactly set_maxelem big refused the new address ("set is full"), and DNS extraction then
// closed live addresses to make room (65,528 of 65,536 in the end-to-end scale test).
func TestFullSetExpired(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		if kind == "iptables-legacy" {
			t.Skip("same sets as iptables")
		}
		ns := fwtest.NewNS(t, "afc-fwe")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		p := testPolicy
		p.MaxElem = 1024
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		ps := fullSet(p.MaxElem, false)
		ps[0].TTL = time.Second
		if err := f.AllowAll(ps); err != nil {
			t.Fatal(err)
		}
		// Keep committing (a DNS answer's refresh every 10 ms) past the expiry.
		keep := ps[1]
		for end := time.Now().Add(1300 * time.Millisecond); time.Now().Before(end); {
			keep.TTL += time.Second
			if err := f.AllowAll([]firewall.Pinhole{keep}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		fresh := firewall.Pinhole{Addr: benchAddr(p.MaxElem), TTL: time.Hour}
		if err := f.AllowAll([]firewall.Pinhole{fresh}); err != nil {
			t.Fatalf("%d live addresses in a set of set_maxelem %d, one just expired: a new one: %v", p.MaxElem-1, p.MaxElem, err)
		}
	})
}
