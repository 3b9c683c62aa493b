package firewall_test

import (
	"context"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// fw4Flush does what `fw4 flush` (and so `/etc/init.d/firewall stop` on
// OpenWrt) does: list the tables, then delete them one by one, each in a
// transaction of its own. No include runs afterwards.
const fw4Flush = `nft list tables | while read dummy family table; do nft delete table "$family" "$table"; done`

// TestWatchRepairs: with the watch running and no periodic check, a flush
// is repaired with every learned address, on both backends whose changes
// nf_tables tells (nftables and iptables-nft), for `nft flush ruleset`,
// fw4's flush, iptables -F and the flush of one chain or set.
func TestWatchRepairs(t *testing.T) {
	fwtest.NeedRoot(t)
	for _, kind := range []string{"nftables", "iptables"} {
		t.Run(kind, func(t *testing.T) {
			const n = firewall.DefaultMaxElem
			ns := fwtest.NewNS(t, "afc-fww")
			f := firewall.New(fwtest.NewBackend(t, ns, kind), nil)
			if err := f.Setup(testPolicy); err != nil {
				t.Fatal(err)
			}
			if err := f.AllowAll(fullSet(n, false)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			repairs := make(chan error, 100)
			if err := f.Watch(ctx, func(err error) { repairs <- err }); err != nil {
				t.Fatal(err)
			}
			damage := [][]string{{"nft", "flush", "ruleset"}, {"sh", "-c", fw4Flush}}
			if kind == "nftables" {
				damage = append(damage, []string{"nft", "flush", "chain", "inet", "afconn", firewall.ChainWhitelistOut},
					[]string{"nft", "flush", "set", "inet", "afconn", "static4"})
			} else {
				damage = append(damage, []string{"iptables", "-F"}, []string{"ip6tables", "-F", "OUTPUT"})
			}
			for _, d := range damage {
				addFW4(t, ns)
				ns.MustExec(t, d[0], d[1:]...)
				// Generous: the machine is shared; the periodic check this
				// replaces came after 5 s.
				select {
				case err := <-repairs:
					if err != nil {
						t.Fatalf("after %q: repair: %v", d, err)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("after %q: no repair", d)
				}
				if err := f.Verify(); err != nil {
					t.Fatalf("after %q: %v", d, err)
				}
				if k := f.Stats(true).Kernel["allow4"]; k != n {
					t.Fatalf("after %q: %d learned addresses in the kernel, want %d", d, k, n)
				}
				for len(repairs) > 0 {
					<-repairs
				}
			}
			cancel()
			time.Sleep(100 * time.Millisecond)
			fwtest.Flush(t, ns, kind)
			time.Sleep(300 * time.Millisecond)
			if err := f.Verify(); err == nil {
				t.Fatal("the watch still repairs after its context ended")
			}
		})
	}
}

// TestWatchCheckRace: the periodic check runs between a flush and the arrival of its
// notification (a process short of CPU runs both at once, in any order). It leaves the repair
// to the watch, which says it noticed the flush by its notification; with no notification
// (a lost one: a deletion the watch does not look at) the watch repairs the check's find after
// a grace, as noticed by the check. Before, the check repaired, the flush looked noticed by the
// periodic check, and a repair overtaken by another reported the other's progress.
func TestWatchCheckRace(t *testing.T) {
	fwtest.NeedRoot(t)
	ns := fwtest.NewNS(t, "afc-fwc")
	f := firewall.New(fwtest.NewBackend(t, ns, "nftables"), nil)
	if err := f.Setup(testPolicy); err != nil {
		t.Fatal(err)
	}
	if err := f.AllowAll(fullSet(4096, false)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repairs := make(chan firewall.RestoreResult, 10)
	if err := f.Watch(ctx, func(err error) {
		if err != nil {
			t.Error(err)
		}
		repairs <- f.LastRestore()
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ns.MustExec(t, "nft", "flush", "ruleset")
		if restored, err := f.Ensure(); restored || err != nil {
			t.Fatalf("flush %d: the check right after it restored (%v, %v): the watch's repair", i, restored, err)
		}
		select {
		case r := <-repairs:
			if r.Noticed.IsZero() || r.Restored != 4096 {
				t.Fatalf("flush %d: repair %+v, want noticed by the notification, 4096 restored", i, r)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("flush %d: no repair", i)
		}
		if len(repairs) > 0 {
			t.Fatalf("flush %d: more than one repair: %+v", i, <-repairs)
		}
	}
	// Damage no notification tells of (the watch filters element deletions in the learned
	// sets; here the rule count is changed by hand without one): the check's find. First the
	// flushes' last notifications (a flush sends several; a loaded machine delivers them
	// late) are let through, so that none is pending.
	time.Sleep(time.Second)
	for len(repairs) > 0 {
		<-repairs
	}
	ns.MustExec(t, "nft", "add", "rule", "inet", "afconn", firewall.ChainWhitelistOut, "counter")
	if restored, _ := f.Ensure(); restored {
		t.Fatal("the check repaired while a watch runs")
	}
	select {
	case r := <-repairs:
		if !r.Noticed.IsZero() {
			t.Fatalf("repair %+v: noticed by a notification, want by the check", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no repair of the check's find")
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
}
