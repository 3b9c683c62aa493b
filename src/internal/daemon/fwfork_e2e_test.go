package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The firewall's periodic check forks nothing while nf_tables notifies every deletion of the
// rules: under iptables-nft the iptables backend's chains are nf_tables objects, and reading
// them back with `iptables -S` and `ip6tables -S` every 5 s was most of an idle hub's CPU in
// the default configuration (issue 10). Under iptables-legacy nothing notifies, so there the
// check still reads the rules and repairs a flush. iptables, ip6tables and their -restore
// commands are scripts in PATH that log each run and call the variant under test.
func TestE2EFirewallCheckForks(t *testing.T) {
	for _, c := range []struct {
		variant string
		forks   bool   // the periodic check runs iptables
		repair  string // what notices a flush
	}{
		{"nft", false, "nf_tables event"},
		{"legacy", true, "periodic check"},
	} {
		t.Run(c.variant, func(t *testing.T) {
			calls := wrapIPTables(t, c.variant)
			e := newE2E(t, "iptables")
			// The set-up's runs are over once the lock-down is in force; then three periods.
			before := lines(calls)
			time.Sleep(16 * time.Second)
			ran := lines(calls)[len(before):]
			t.Logf("iptables-%s: %d runs in 16 s idle: %q", c.variant, len(ran), ran)
			if c.forks != (len(ran) > 0) {
				t.Errorf("iptables-%s: %d runs of iptables in 16 s idle, want runs: %v", c.variant, len(ran), c.forks)
			}
			mark := e.p.Mark()
			if _, err := e.w.Device.Run("iptables-"+c.variant, "-F"); err != nil {
				t.Fatal(err)
			}
			e.waitLog(mark, `firewall rules were removed.* noticed_by="`+c.repair+`"`)
			if err := e.connect("198.19.0.1", 5*time.Second); err != nil {
				t.Fatalf("the echo host after the repair: %v", err)
			}
		})
	}
}

// wrapIPTables puts iptables, ip6tables and their -restore commands first in PATH: each logs
// its arguments to the returned file and runs iptables-VARIANT (nft or legacy).
func wrapIPTables(t *testing.T, variant string) string {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	for _, name := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"} {
		fam, restore, _ := strings.Cut(name, "-")
		real := fam + "-" + variant
		if restore != "" {
			real += "-" + restore
		}
		path, err := exec.LookPath(real)
		if err != nil {
			t.Skipf("%s not installed: %v", real, err)
		}
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\nexec %s \"$@\"\n", name, calls, path)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return calls
}

// lines returns the lines of a file (none when it does not exist).
func lines(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
}
