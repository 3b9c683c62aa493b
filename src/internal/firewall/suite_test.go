package firewall_test

// The backend suite: every test runs over every backend kind (nftables,
// iptables-nft, iptables-legacy where installed), each in fresh network
// namespaces, against the real kernel.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

func eachKind(t *testing.T, fn func(t *testing.T, kind string)) {
	fwtest.NeedRoot(t)
	for _, kind := range fwtest.Kinds() {
		t.Run(kind, func(t *testing.T) { fn(t, kind) })
	}
}

var testPolicy = firewall.Policy{
	Uplinks: []string{"eth0", "wlan0", "wwan0"},
	Static:  []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24"), netip.MustParsePrefix("198.18.101.7/32"), netip.MustParsePrefix("2001:db8:1::/48")},
}

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

// poll waits until cond holds, failing after timeout (generous: the
// machine is shared).
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func counts(t *testing.T, b firewall.Backend) map[string]int {
	t.Helper()
	c, err := b.Counts()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSetupCreatesChainsAndSets(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		b := fwtest.NewBackend(t, ns, kind)
		if err := b.Check(); !errors.Is(err, firewall.ErrNotSetUp) {
			t.Errorf("Check before Setup = %v, want ErrNotSetUp", err)
		}
		if _, err := b.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		if err := b.Check(); err != nil {
			t.Fatalf("Check after Setup: %v", err)
		}
		for _, chain := range firewall.Chains {
			switch kind {
			case "nftables":
				ns.MustExec(t, "nft", "list", "chain", "inet", "afconn", chain)
			default:
				bin := map[string]string{"iptables": "iptables", "iptables-legacy": "iptables-legacy"}[kind]
				ns.MustExec(t, bin, "-S", chain)
				ns.MustExec(t, strings.Replace(bin, "ip", "ip6", 1), "-S", chain)
			}
		}
		c := counts(t, b)
		want := map[string]int{"allow4": 0, "allow6": 0, "fwd4": 0, "fwd6": 0, "static4": 2, "static6": 1}
		if fmt.Sprint(c) != fmt.Sprint(want) {
			t.Errorf("counts = %v, want %v", c, want)
		}
		dump := fwtest.Dump(t, ns)
		for _, s := range []string{"198.18.100.0/24", "198.18.101.7", "2001:db8:1::/48"} {
			if !strings.Contains(dump, s) {
				t.Errorf("static entry %s not in the kernel:\n%s", s, dump)
			}
		}
	})
}

func TestSetupIdempotent(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		b := fwtest.NewBackend(t, ns, kind)
		p := testPolicy
		p.DNSQueue = firewall.QueueHook{Enabled: true, Num: 4}
		if _, err := b.Setup(p); err != nil {
			t.Fatal(err)
		}
		// A learned address must survive restarts.
		if err := b.Add([]firewall.Pinhole{{Addr: a("198.18.0.9"), TTL: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		first := fwtest.Dump(t, ns)
		for i := 0; i < 100; i++ {
			// A new backend each time, as a restarted daemon has.
			bi := fwtest.OpenBackend(t, ns, kind)
			if _, err := bi.Setup(p); err != nil {
				t.Fatalf("Setup #%d: %v", i+2, err)
			}
			bi.Close()
		}
		if again := fwtest.Dump(t, ns); again != first {
			t.Fatalf("ruleset changed after 100 Setups:\n--- first\n%s\n--- after\n%s", first, again)
		}
		if !strings.Contains(first, "198.18.0.9") {
			t.Fatalf("learned address missing:\n%s", first)
		}
	})
}

func TestAllowDisallowExpiry(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		if err := f.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		short, long, perm, fwd := a("198.18.0.10"), a("198.18.0.11"), a("198.18.0.12"), a("2001:db8::12")
		for _, step := range []struct {
			addr    netip.Addr
			ttl     time.Duration
			forward bool
		}{{short, 2 * time.Second, false}, {long, 2 * time.Second, false}, {perm, 0, false}, {fwd, 2 * time.Second, true}} {
			if err := f.Allow(step.addr, step.ttl, step.forward); err != nil {
				t.Fatal(err)
			}
		}
		// Refresh: long gets an hour; must outlive its first 2 s.
		if err := f.Allow(long, time.Hour, false); err != nil {
			t.Fatal(err)
		}
		st := f.Stats(true)
		if st.Learned4 != 3 || st.Forward6 != 1 || st.Kernel["allow4"] != 3 || st.Kernel["fwd6"] != 1 {
			t.Fatalf("stats after allow: %+v", st)
		}
		if err := f.Disallow(perm, false); err != nil {
			t.Fatal(err)
		}
		if err := f.Disallow(a("198.18.0.99"), false); err != nil {
			t.Errorf("Disallow of an absent address: %v", err)
		}
		poll(t, 20*time.Second, "short-lived pinholes to expire in the kernel", func() bool {
			k := f.Stats(true).Kernel
			return k["allow4"] == 1 && k["fwd6"] == 0
		})
		dump := fwtest.Dump(t, ns)
		if !strings.Contains(dump, "198.18.0.11") || strings.Contains(dump, "198.18.0.10") || strings.Contains(dump, "198.18.0.12") {
			t.Fatalf("after expiry want only 198.18.0.11 learned:\n%s", dump)
		}
		if st := f.Stats(false); st.Learned4 != 1 || st.Forward6 != 0 {
			t.Errorf("record after expiry: %+v", st)
		}
	})
}

func TestMaxElem(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		p := testPolicy
		p.MaxElem = 4
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 4; i++ {
			if err := f.Allow(a(fmt.Sprintf("198.18.1.%d", i)), time.Hour, false); err != nil {
				t.Fatalf("address %d of 4: %v", i, err)
			}
		}
		err := f.Allow(a("198.18.1.5"), time.Hour, false)
		if !errors.Is(err, firewall.ErrSetFull) || !strings.Contains(err.Error(), "198.18.1.5") {
			t.Fatalf("5th address: err = %v, want ErrSetFull naming the address", err)
		}
		if st := f.Stats(true); st.Full != 1 || st.Learned4 != 4 || st.Kernel["allow4"] != 4 {
			t.Errorf("stats: %+v", st)
		}
		// The forward set has its own bound.
		if err := f.Allow(a("198.18.1.5"), time.Hour, true); err != nil {
			t.Errorf("forward set: %v", err)
		}
		// Making room works.
		if err := f.Disallow(a("198.18.1.1"), false); err != nil {
			t.Fatal(err)
		}
		if err := f.Allow(a("198.18.1.5"), time.Hour, false); err != nil {
			t.Errorf("after making room: %v", err)
		}
		// A changed bound replaces the set; the record puts the addresses back.
		p.MaxElem = 8
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(true); st.Kernel["allow4"] != 4 || st.Kernel["fwd4"] != 1 {
			t.Errorf("after raising set_maxelem: %+v", st)
		}
	})
}

func TestSurvivesFlushAndRestore(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		if err := f.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		if err := f.AllowAll([]firewall.Pinhole{{Addr: a("198.18.0.20"), TTL: time.Hour}, {Addr: a("198.18.0.21"), TTL: time.Hour, Forward: true}}); err != nil {
			t.Fatal(err)
		}
		want := fwtest.Dump(t, ns)
		if restored, err := f.Ensure(); restored || err != nil {
			t.Fatalf("Ensure on intact rules: restored=%v err=%v", restored, err)
		}
		fwtest.Flush(t, ns, kind)
		if err := f.Verify(); err == nil {
			t.Fatal("Verify did not notice the flush")
		} else {
			t.Logf("Verify after flush: %v", err)
		}
		restored, err := f.Ensure()
		if !restored || err != nil {
			t.Fatalf("Ensure after flush: restored=%v err=%v", restored, err)
		}
		if err := f.Verify(); err != nil {
			t.Fatalf("Verify after restore: %v", err)
		}
		if got := fwtest.Dump(t, ns); got != want {
			t.Fatalf("restored state differs:\n--- before flush\n%s\n--- restored\n%s", want, got)
		}
		if st := f.Stats(false); st.Restores != 1 {
			t.Errorf("restores = %d", st.Restores)
		}
	})
}

// foreign is a fw4-like nft table plus foreign iptables rules and sets,
// standing for everything on a device that is not ours.
func addForeign(t *testing.T, ns *fwtest.NS, kind string) {
	t.Helper()
	addFW4(t, ns)
	ns.MustExec(t, "ipset", "create", "foreign", "hash:ip")
	ns.MustExec(t, "ipset", "add", "foreign", "198.18.9.8")
	if kind != "nftables" {
		bin := map[string]string{"iptables": "iptables", "iptables-legacy": "iptables-legacy"}[kind]
		// fw3 sets the policies of all built-in chains, so they exist
		// (iptables-nft creates a built-in chain at its first use).
		for _, b := range []string{bin, strings.Replace(bin, "ip", "ip6", 1)} {
			for _, c := range []string{"INPUT", "OUTPUT", "FORWARD"} {
				ns.MustExec(t, b, "-P", c, "ACCEPT")
			}
		}
		ns.MustExec(t, bin, "-N", "FOREIGN")
		ns.MustExec(t, bin, "-A", "FOREIGN", "-m", "set", "--match-set", "foreign", "src", "-j", "ACCEPT")
		ns.MustExec(t, bin, "-A", "INPUT", "-i", "eth0", "-j", "FOREIGN")
		ns.MustExec(t, bin, "-A", "INPUT", "-m", "comment", "--comment", "AFERO_ALLOW_SERVICE_INPUT lookalike", "-j", "ACCEPT")
		ns.MustExec(t, bin, "-A", "OUTPUT", "-o", "eth0", "-p", "tcp", "--dport", "25", "-j", "DROP")
		ns.MustExec(t, strings.Replace(bin, "ip", "ip6", 1), "-A", "FORWARD", "-i", "br-lan", "-j", "ACCEPT")
	}
}

// addFW4 loads a table shaped like fw4's.
func addFW4(t testing.TB, ns *fwtest.NS) {
	t.Helper()
	const fw4 = `table inet fw4 {
	set lan_hosts { type ipv4_addr; elements = { 198.18.9.9 }; }
	chain input { type filter hook input priority filter; policy accept; iifname "lo" accept; ct state established,related accept; }
	chain forward { type filter hook forward priority filter; policy drop; }
	chain output { type filter hook output priority filter; policy accept; }
	chain handle_reject { reject; }
}
`
	ns.MustExec(t, "sh", "-c", "printf '%s' \"$1\" | nft -f -", "sh", fw4)
}

func TestTeardownLeavesForeignRules(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		addForeign(t, ns, kind)
		before := fwtest.Dump(t, ns)
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		p := testPolicy
		p.DNSQueue = firewall.QueueHook{Enabled: true, Num: 2}
		if err := f.Setup(p); err != nil {
			t.Fatal(err)
		}
		if err := f.Allow(a("198.18.0.30"), time.Hour, false); err != nil {
			t.Fatal(err)
		}
		if kind == "nftables" {
			// What "fw4 reload" does must not touch our table.
			ns.MustExec(t, "nft", "flush", "table", "inet", "fw4")
			ns.MustExec(t, "nft", "delete", "table", "inet", "fw4")
			if err := f.Verify(); err != nil {
				t.Fatalf("fw4's table went away and ours is damaged: %v", err)
			}
			addFW4(t, ns)
		}
		if err := f.Teardown(); err != nil {
			t.Fatal(err)
		}
		if after := fwtest.Dump(t, ns); after != before {
			t.Fatalf("teardown changed foreign state:\n--- before setup\n%s\n--- after teardown\n%s", before, after)
		}
		// Teardown again (nothing of ours left) is not an error.
		if err := f.Teardown(); err != nil {
			t.Fatalf("second teardown: %v", err)
		}
	})
}

func TestQueueMode(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		if f.QueueMode() != firewall.QueueOff {
			t.Errorf("before setup: %s", f.QueueMode())
		}
		p := testPolicy
		p.DNSQueue = firewall.QueueHook{Enabled: true, Num: 6}
		err := f.Setup(p)
		mode := f.QueueMode()
		t.Logf("%s: queue mode %s (err %v)", kind, mode, err)
		switch mode {
		case firewall.QueueNative, firewall.QueueXT:
			if err != nil {
				t.Fatal(err)
			}
		case firewall.QueueUnavailable:
			if !errors.Is(err, firewall.ErrQueueUnavailable) {
				t.Fatalf("unavailable without ErrQueueUnavailable: %v", err)
			}
		default:
			t.Fatalf("mode %q with the hook requested", mode)
		}
		if !strings.Contains(fwtest.Dump(t, ns), "queue") && !strings.Contains(fwtest.Dump(t, ns), "NFQUEUE") {
			t.Errorf("no queue rule in the ruleset")
		}
		p.DNSQueue.Enabled = false
		if err := f.Setup(p); err != nil || f.QueueMode() != firewall.QueueOff {
			t.Fatalf("hook off: mode %s, err %v", f.QueueMode(), err)
		}
		if d := fwtest.Dump(t, ns); strings.Contains(d, "NFQUEUE") || strings.Contains(d, "queue num") {
			t.Errorf("queue rule left after turning the hook off:\n%s", d)
		}
	})
}

// TestDirectAdd is `connmgr fw add` without a daemon: a backend that did
// not set anything up adds to the sets another one made.
func TestDirectAdd(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		lone := fwtest.OpenBackend(t, ns, kind)
		defer lone.Close()
		if err := lone.Add([]firewall.Pinhole{{Addr: a("198.18.0.40")}}); !errors.Is(err, firewall.ErrNotSetUp) {
			t.Fatalf("Add with nothing set up: %v, want ErrNotSetUp", err)
		}
		if err := lone.Del([]firewall.Pinhole{{Addr: a("198.18.0.40")}}); !errors.Is(err, firewall.ErrNotSetUp) {
			t.Fatalf("Del with nothing set up: %v, want ErrNotSetUp", err)
		}
		daemon := fwtest.NewBackend(t, ns, kind)
		if _, err := daemon.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		if err := lone.Add([]firewall.Pinhole{{Addr: a("198.18.0.40")}, {Addr: a("2001:db8::40"), Forward: true}}); err != nil {
			t.Fatal(err)
		}
		if c := counts(t, daemon); c["allow4"] != 1 || c["fwd6"] != 1 {
			t.Fatalf("counts after direct add: %v", c)
		}
		if err := lone.Del([]firewall.Pinhole{{Addr: a("198.18.0.40")}, {Addr: a("2001:db8::40"), Forward: true}}); err != nil {
			t.Fatal(err)
		}
		if c := counts(t, daemon); c["allow4"] != 0 || c["fwd6"] != 0 {
			t.Fatalf("counts after direct del: %v", c)
		}
	})
}

// TestNFTRefreshAndPermanent: a refresh sets the new lifetime, longer or
// shorter, and a timed element can be made permanent.
func TestNFTRefreshAndPermanent(t *testing.T) {
	fwtest.NeedRoot(t)
	ns := fwtest.NewNS(t, "afc-fw")
	b := fwtest.NewBackend(t, ns, "nftables")
	if _, err := b.Setup(testPolicy); err != nil {
		t.Fatal(err)
	}
	x := a("198.18.0.50")
	for _, ttl := range []time.Duration{2 * time.Second, time.Hour} {
		if err := b.Add([]firewall.Pinhole{{Addr: x, TTL: ttl}}); err != nil {
			t.Fatal(err)
		}
	}
	if d := ns.MustExec(t, "nft", "list", "set", "inet", "afconn", "allow4"); !strings.Contains(d, "timeout 1h") {
		t.Fatalf("refresh to 1h not applied:\n%s", d)
	}
	// A timed element made permanent.
	if err := b.Add([]firewall.Pinhole{{Addr: x}}); err != nil {
		t.Fatal(err)
	}
	if d := ns.MustExec(t, "nft", "list", "set", "inet", "afconn", "allow4"); strings.Contains(d, "expires") || !strings.Contains(d, "198.18.0.50") {
		t.Fatalf("element not permanent:\n%s", d)
	}
}

// Forget closes learned addresses (device and forwarding) and leaves those opened
// permanently, and addresses it never recorded, alone.
func TestForgetLearnedOnly(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		ns := fwtest.NewNS(t, "afc-fw")
		f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
		if err := f.Setup(testPolicy); err != nil {
			t.Fatal(err)
		}
		learned, perm, fwd := a("198.18.0.20"), a("198.18.0.21"), a("2001:db8::22")
		if err := f.AllowAll([]firewall.Pinhole{{Addr: learned, TTL: time.Hour}, {Addr: perm}, {Addr: fwd, TTL: time.Hour, Forward: true}}); err != nil {
			t.Fatal(err)
		}
		if err := f.Forget([]netip.Addr{learned, perm, fwd, a("198.18.0.99")}); err != nil {
			t.Fatal(err)
		}
		st := f.Stats(true)
		if st.Learned4 != 1 || st.Forward6 != 0 || st.Kernel["allow4"] != 1 || st.Kernel["fwd6"] != 0 {
			t.Fatalf("after Forget: %+v", st)
		}
		if dump := fwtest.Dump(t, ns); !strings.Contains(dump, "198.18.0.21") || strings.Contains(dump, "198.18.0.20") {
			t.Fatalf("after Forget want only the permanent 198.18.0.21:\n%s", dump)
		}
	})
}
