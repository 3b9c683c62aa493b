package firewall_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// BenchmarkSetUpdate is the cost of opening one pinhole: one netlink
// change through each backend, against one iptables process and one ipset
// process doing the same, all measured in the same run (medians of
// per-operation times). Run with
//
//	cd src && go test -run '^$' -bench SetUpdate -benchtime 1x ./internal/firewall/
func BenchmarkSetUpdate(b *testing.B) {
	fwtest.NeedRoot(b)
	const (
		netlinkOps = 2000
		processOps = 200
	)
	ns := fwtest.NewNS(b, "afc-fwb")
	med := map[string]time.Duration{}

	for _, kind := range []string{"nftables", "iptables"} {
		be := fwtest.NewBackend(b, ns, kind)
		if _, err := be.Setup(firewall.Policy{Uplinks: []string{"eth0"}}); err != nil {
			b.Fatal(err)
		}
		var ds []time.Duration
		for i := 0; i < netlinkOps; i++ {
			p := []firewall.Pinhole{{Addr: benchAddr(i), TTL: time.Hour, Comment: "bench.afero.io"}}
			t0 := time.Now()
			if err := be.Add(p); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		med[kind+" netlink"] = median(ds)
		if err := be.Teardown(); err != nil {
			b.Fatal(err)
		}
	}

	// The old way: one process per address.
	ns.MustExec(b, "iptables", "-N", "AFERO_BENCH")
	ns.MustExec(b, "ipset", "create", "afconn_bench", "hash:ip", "timeout", "0")
	for _, tool := range []struct {
		name string
		argv func(a netip.Addr) []string
	}{
		{"iptables process", func(a netip.Addr) []string {
			return []string{"iptables", "-w", "-A", "AFERO_BENCH", "-d", a.String(), "-j", "ACCEPT"}
		}},
		{"ipset process", func(a netip.Addr) []string {
			return []string{"ipset", "add", "afconn_bench", a.String(), "timeout", "3600"}
		}},
	} {
		var ds []time.Duration
		err := ns.Run(func() error {
			for i := 0; i < processOps; i++ {
				argv := tool.argv(benchAddr(100000 + i))
				t0 := time.Now()
				if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %w: %s", argv, err, out)
				}
				ds = append(ds, time.Since(t0))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		med[tool.name] = median(ds)
	}

	for _, k := range []string{"nftables netlink", "iptables netlink", "iptables process", "ipset process"} {
		b.Logf("%-18s median %8.1f us per address", k, float64(med[k].Nanoseconds())/1e3)
	}
	ratio := float64(med["iptables process"]) / float64(med["nftables netlink"])
	b.Logf("one iptables process costs %.0fx one nftables netlink update, %.0fx one ipset netlink update",
		ratio, float64(med["iptables process"])/float64(med["iptables netlink"]))
	b.ReportMetric(float64(med["nftables netlink"].Nanoseconds())/1e3, "nft-us/addr")
	b.ReportMetric(float64(med["iptables netlink"].Nanoseconds())/1e3, "ipset-nl-us/addr")
	b.ReportMetric(float64(med["iptables process"].Nanoseconds())/1e3, "iptables-proc-us/addr")
	b.ReportMetric(float64(med["ipset process"].Nanoseconds())/1e3, "ipset-proc-us/addr")
	b.ReportMetric(ratio, "proc/nft-ratio")
}

func benchAddr(i int) netip.Addr {
	// 198.18.0.0/15 holds 131072 addresses.
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
