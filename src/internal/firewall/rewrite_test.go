package firewall_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// ipt4Open says what, in one `iptables -S` sample, lets eth0's traffic past the lock-down:
// a missing jump from a built-in chain, or one of our chains without its closing rule (the
// unconditional jump that ends it; rules above it only let through what a policy allows).
func ipt4Open(sample string) string {
	var lines []string
	for _, l := range strings.Split(sample, "\n") {
		if strings.HasPrefix(l, "-A ") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	all := strings.Join(lines, "\n")
	for _, j := range []string{"-A INPUT -i eth0 -j " + firewall.ChainServiceInput,
		"-A OUTPUT -o eth0 -j " + firewall.ChainServiceOutput,
		"-A FORWARD -i eth0 -j " + firewall.ChainForwardService,
		"-A FORWARD -o eth0 -j " + firewall.ChainForwardService} {
		if !strings.Contains(all, j) {
			return "no " + j
		}
	}
	for chain, want := range map[string]string{
		firewall.ChainServiceInput:   "-j " + firewall.ChainWhitelistIn,
		firewall.ChainServiceOutput:  "-j " + firewall.ChainWhitelistOut,
		firewall.ChainForwardService: "-j " + firewall.ChainForwardWL,
		firewall.ChainWhitelistIn:    "-j DROP",
		firewall.ChainWhitelistOut:   "-j DROP",
		firewall.ChainForwardWL:      "-j DROP",
	} {
		if !slices.Contains(lines, "-A "+chain+" "+want) {
			return fmt.Sprintf("%s has no %q", chain, want)
		}
	}
	return ""
}

// A new instance adopting a lock-down made for another configuration (procd's respawn after a
// crash, the admin having changed the uplinks meanwhile), or a reload that changes the rules,
// rewrites the iptables chains in place. No moment of the rewrite may let eth0 (an uplink in
// both) past the lock-down: README "What a fault leaves behind" promises no moment without it.
func TestIPTRewriteNeverOpens(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		if kind == "nftables" {
			t.Skip("one netlink transaction")
		}
		ns := fwtest.NewNS(t, "afc-rw")
		before := testPolicy
		before.Uplinks = []string{"eth0"}
		if _, err := fwtest.NewBackend(t, ns, kind).Setup(before); err != nil {
			t.Fatal(err)
		}
		bin := "iptables"
		if kind == "iptables-legacy" {
			bin = "iptables-legacy"
		}
		if s, _ := ns.Exec(bin, "-S"); ipt4Open(s) != "" {
			t.Fatalf("lock-down open before the rewrite: %s\n%s", ipt4Open(s), s)
		}
		var (
			wg      sync.WaitGroup
			done    = make(chan struct{})
			samples int
			open    []string
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				s, err := ns.Exec(bin, "-w", "5", "-S")
				if err != nil {
					continue
				}
				samples++
				if why := ipt4Open(s); why != "" {
					open = append(open, why)
				}
			}
		}()
		adopter := fwtest.OpenBackend(t, ns, kind)
		after := testPolicy // three uplinks: every chain's rules change
		if _, err := adopter.Setup(after); err != nil {
			t.Fatal(err)
		}
		adopter.Close()
		close(done)
		wg.Wait()
		t.Logf("%d samples during the rewrite", samples)
		if len(open) > 0 {
			t.Fatalf("%d of %d samples open, e.g. %s", len(open), samples, open[0])
		}
	})
}
