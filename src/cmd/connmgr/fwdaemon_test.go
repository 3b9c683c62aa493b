package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// The real binary in firewall mode: locks the uplinks down at start, puts its rules back
// after `nft flush ruleset`, and removes them on SIGTERM.
func TestDaemonFirewallLifecycle(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	dir := writeFiles(t, map[string]string{
		"network":   testNetwork,
		"connmgr":   "config connmgr 'main'\n\toption firewall_backend 'nftables'\n\toption echo_host '198.19.0.1'\n",
		"whitelist": "198.19.0.1\n*.afero.io\n",
	})
	p := w.StartConnmgr(t, "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", filepath.Join(dir, "ubus.sock"))
	if _, err := p.WaitLog(regexp.MustCompile(`msg="firewall lock-down in force" backend=nftables`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	list := func() string {
		out, _ := w.Device.Run("nft", "list", "table", "inet", "afconn")
		return out
	}
	if got := list(); !strings.Contains(got, "198.19.0.1") || !strings.Contains(got, `"wwan0"`) {
		t.Fatalf("lock-down not in the kernel:\n%s", got)
	}
	mark := p.Mark()
	if _, err := w.Device.Run("nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
	line, err := p.WaitLogFrom(mark, regexp.MustCompile(`firewall rules were removed`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, "err=<nil>") {
		t.Errorf("a restore that worked logged a nil error: %s", line)
	}
	if warn := regexp.MustCompile(`level=WARN msg="netmon: full dump`).FindString(p.Log()); warn != "" {
		t.Errorf("the start's netlink dump logged as a warning: %s", warn)
	}
	if got := list(); !strings.Contains(got, "AFERO_FORWARD_WHITELIST") || !strings.Contains(got, "198.19.0.1") {
		t.Fatalf("not restored:\n%s", got)
	}
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatalf("connmgr did not exit 0: %v\n%s", err, p.Log())
	}
	if out, err := w.Device.Run("nft", "list", "table", "inet", "afconn"); err == nil {
		t.Fatalf("table left after exit:\n%s", out)
	}
}
