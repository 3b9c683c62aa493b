package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCommandLineErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-x"}, exitUsage, "flag provided but not defined: -x"},
		{[]string{"-c"}, exitUsage, "flag needs an argument: -c"},
		{[]string{"bogus"}, exitUsage, `unknown command or argument "bogus"`},
		{[]string{"version", "extra"}, exitUsage, "takes no arguments"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("connmgr %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, stdout, _ := runCLI("-h")
	if code != 0 || !strings.Contains(stdout, "usage: connmgr [-d] [-c UCI_DIR] [-w WHITELIST] [-s UBUS_SOCKET]") {
		t.Errorf("-h: exit %d, output %q", code, stdout)
	}
	for name := range subcommands {
		if !strings.Contains(stdout, "  "+name+" ") {
			t.Errorf("-h does not list command %q", name)
		}
	}
	if code, stdout, _ := runCLI("version"); code != 0 || !strings.HasPrefix(stdout, "connmgr ") {
		t.Errorf("version: exit %d, output %q", code, stdout)
	}
}

// A bad configuration at start is reported with the file and line (syntax) or the option and
// value (validation), and the daemon exits non-zero without starting.
func TestBadConfigurationAtStart(t *testing.T) {
	syntax := writeFiles(t, map[string]string{"connmgr": "config connmgr 'main'\n\toption echo_host 'echo.afero.io\n"})
	code, _, stderr := runCLI("-c", syntax, "-d")
	if code != exitFailure || !strings.Contains(stderr, filepath.Join(syntax, "connmgr")) || !strings.Contains(stderr, "line 2") {
		t.Errorf("syntax error: exit %d, stderr %q; want exit 1 naming the file and line 2", code, stderr)
	}
	invalid := writeFiles(t, map[string]string{"connmgr": "config connmgr 'main'\n\toption echo_port 'eighty'\n"})
	code, _, stderr = runCLI("-c", invalid, "-d")
	if code != exitFailure || !strings.Contains(stderr, "echo_port") || !strings.Contains(stderr, "eighty") {
		t.Errorf("invalid value: exit %d, stderr %q; want exit 1 naming echo_port and 'eighty'", code, stderr)
	}
}

const testNetwork = `
config interface 'ethnet'
	option device 'eth0'
	option proto 'dhcp'
	option metric '10'

config interface 'stanet'
	option ifname 'wlan0'
	option proto 'dhcp'
	option metric '20'

config interface 'modemnet'
	option ifname 'wwan0'
	option proto 'dhcp'
	option metric '50'
`

// The real binary, in a device namespace, reads the configuration the test wrote, logs the
// uplinks it found, reloads on SIGHUP, keeps the last good configuration when the new one is
// bad, and exits 0 on SIGTERM.
func TestDaemonReadsConfigInWorld(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	dir := writeFiles(t, map[string]string{
		"network": testNetwork,
		"connmgr": "config connmgr 'main'\n\toption firewall '0'\n\toption echo_host '198.19.0.1'\n\toption log_level 'debug'\n",
	})
	p := w.StartConnmgr(t, "-c", dir, "-s", filepath.Join(dir, "ubus.sock"))
	for _, re := range []string{
		`level=INFO msg=starting .*firewall=false`,
		`msg=uplink network=ethnet device=eth0 type=ethernet`,
		`msg=uplink network=stanet device=wlan0 type=wifi`,
		`msg=uplink network=modemnet device=wwan0 type=cellular`,
		`echo=198.19.0.1:80`,
	} {
		if _, err := p.WaitLog(regexp.MustCompile(re), 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	mark := p.Mark()
	if err := os.WriteFile(filepath.Join(dir, "connmgr"), []byte("config connmgr 'main'\n\toption firewall '0'\n\toption echo_port '8080'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if _, err := p.WaitLogFrom(mark, regexp.MustCompile(`msg=reloaded .*echo=echo.afero.io:8080`), 20*time.Second); err != nil {
		t.Fatal(err)
	}

	mark = p.Mark()
	if err := os.WriteFile(filepath.Join(dir, "connmgr"), []byte("config connmgr 'main'\n\toption echo_port '0'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if _, err := p.WaitLogFrom(mark, regexp.MustCompile(`level=ERROR msg="reload failed; keeping the running configuration".*echo_port`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatalf("connmgr did not exit 0 on SIGTERM: %v\n%s", err, p.Log())
	}
	if !strings.Contains(p.Log(), "msg=stopped") {
		t.Errorf("no 'stopped' line in the log:\n%s", p.Log())
	}
}

// The daemon's GOGC applies unless the environment names one.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	tuneGC()
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	t.Setenv("GOGC", "100")
	tuneGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100 in the environment: GC percent %d, want 100", got)
	}
}
