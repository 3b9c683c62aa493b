package openwrtfiles

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var filesDir = filepath.Join("..", "..", "..", "files")

// shell is the shell scripts run under: busybox ash, OpenWrt's shell, when it is installed,
// else the system's sh.
func shell(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("busybox"); err == nil {
		return []string{p, "sh"}
	}
	return []string{"sh"}
}

// record is a shell function the stand-ins share: it appends one line to $STANDIN_LOG with
// every argument in brackets, so argument boundaries show.
const record = `record() {
	_line=
	for _a in "$@"; do _line="$_line[$_a]"; done
	printf '%s\n' "$_line" >> "$STANDIN_LOG"
}
`

// rcCommon stands in for /etc/rc.common and /lib/functions/procd.sh: it loads the init
// script as rc.common does, runs the procd entry points for an action the way rc.common's
// procd mode does (start: start_service inside a service, then service_triggers; reload:
// reload_service) and records every procd call. config_load reads a UCI file the way the
// old shell loader did: UCI's syntax is shell, given config/option/list functions.
const rcCommon = record + `
initscript=$1
action=$2
shift 2

config() { CONFIG_SECTION=$2; CONFIG_SECTIONS="$CONFIG_SECTIONS $2"; eval "CONFIG_${2}_TYPE=\$1"; }
option() { eval "CONFIG_${CONFIG_SECTION}_$1=\$2"; }
list() { :; }
config_load() {
	for _s in $CONFIG_SECTIONS; do unset "CONFIG_${_s}_TYPE"; done
	CONFIG_SECTIONS=
	[ -f "$STANDIN_UCI/$1" ] && . "$STANDIN_UCI/$1"
	record config_load "$1"
}
config_get() { eval "$1=\${CONFIG_${2}_$3:-\$4}"; }
config_foreach() {
	_fn=$1; _type=$2
	for _s in $CONFIG_SECTIONS; do
		eval "_t=\$CONFIG_${_s}_TYPE"
		[ "$_t" = "$_type" ] && "$_fn" "$_s"
	done
}

procd_open_instance() { record procd_open_instance "$@"; }
procd_set_param() { record procd_set_param "$@"; }
procd_append_param() { record procd_append_param "$@"; }
procd_close_instance() { record procd_close_instance "$@"; }
procd_add_reload_trigger() { record procd_add_reload_trigger "$@"; }
procd_send_signal() { record procd_send_signal "$@"; }

. "$initscript"
record settings "USE_PROCD=$USE_PROCD" "START=$START" "STOP=$STOP"
case "$action" in
start)
	record procd_open_service "$(basename "$initscript")" "$initscript"
	start_service "$@"
	service_triggers
	record procd_close_service
	;;
reload)
	reload_service "$@"
	;;
*)
	echo "stand-in rc.common: action $action not emulated" >&2
	exit 1
	;;
esac
`

type world struct {
	dir, log, uci, bin string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{dir: dir, log: filepath.Join(dir, "log"), uci: filepath.Join(dir, "uci"), bin: filepath.Join(dir, "bin")}
	for _, d := range []string{w.uci, w.bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.write(t, "rc.common", rcCommon, 0o644)
	return w
}

func (w *world) write(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command with the stand-ins' environment and returns its output.
func (w *world) run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append([]string{"PATH=" + w.bin + ":/usr/bin:/bin", "STANDIN_LOG=" + w.log, "STANDIN_UCI=" + w.uci}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (w *world) records(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(w.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (w *world) initScript(t *testing.T, action string) []string {
	t.Helper()
	args := append(shell(t), filepath.Join(w.dir, "rc.common"), filepath.Join(filesDir, "etc", "init.d", "connmgr"), action)
	out, err := w.run(t, nil, args...)
	if err != nil || out != "" {
		t.Fatalf("init script %s: %v\n%s", action, err, out)
	}
	return w.records(t)
}

func TestInitStart(t *testing.T) {
	w := newWorld(t)
	copyFile(t, filepath.Join(filesDir, "etc", "config", "connmgr"), filepath.Join(w.uci, "connmgr"))
	copyFile(t, filepath.Join("testdata", "network"), filepath.Join(w.uci, "network"))
	got := w.initScript(t, "start")
	want := []string{
		"[settings][USE_PROCD=1][START=50][STOP=10]",
		"[procd_open_service][connmgr][" + filepath.Join(filesDir, "etc", "init.d", "connmgr") + "]",
		"[config_load][connmgr]",
		"[config_load][network]",
		"[procd_open_instance]",
		"[procd_set_param][command][/usr/sbin/connmgr][-c][/etc/config][-w][/etc/af-conn/whitelist][-s][/var/run/ubus/ubus.sock]",
		"[procd_set_param][respawn][3600][5][0]",
		"[procd_set_param][stdout][1]",
		"[procd_set_param][stderr][1]",
		"[procd_set_param][file][/etc/config/connmgr][/etc/af-conn/whitelist]",
		"[procd_append_param][netdev][eth0]",
		"[procd_append_param][netdev][wlan0]",
		"[procd_append_param][netdev][wwan0]",
		"[procd_close_instance]",
		"[procd_add_reload_trigger][network][wireless][connmgr]",
		"[procd_close_service]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("procd calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestInitStartUplinkDevices(t *testing.T) {
	w := newWorld(t)
	// Uplink sections are named after their networks. Devices come from the uplink's own
	// 'device', else the network's 'device' or 'ifname'; a modem's /dev node, a network
	// without a device (a Wi-Fi station's) and a disabled uplink give no netdev.
	w.write(t, "uci/connmgr", "config connmgr 'main'\n\toption firewall '1'\n\n"+
		"config uplink 'wan'\n\toption type 'ethernet'\n\n"+
		"config uplink 'lte'\n\toption type 'cellular'\n\n"+
		"config uplink 'wwan'\n\toption type 'wifi'\n\n"+
		"config uplink 'usb'\n\toption type 'cellular'\n\toption device 'usb0'\n\n"+
		"config uplink 'old'\n\toption type 'ethernet'\n\toption enabled '0'\n", 0o644)
	w.write(t, "uci/network", "config interface 'wan'\n\toption device 'eth1'\n\n"+
		"config interface 'lte'\n\toption device '/dev/cdc-wdm0'\n\toption proto 'qmi'\n\n"+
		"config interface 'wwan'\n\toption proto 'dhcp'\n\n"+
		"config interface 'usb'\n\toption ifname 'usb1'\n\n"+
		"config interface 'old'\n\toption ifname 'eth9'\n", 0o644)
	var netdev []string
	for _, r := range w.initScript(t, "start") {
		if strings.HasPrefix(r, "[procd_append_param][netdev]") || strings.HasPrefix(r, "[procd_set_param][netdev]") {
			netdev = append(netdev, r)
		}
	}
	if want := "[procd_append_param][netdev][usb0] [procd_append_param][netdev][eth1]"; strings.Join(netdev, " ") != want {
		t.Errorf("netdev %v, want %s", netdev, want)
	}
}

func TestInitStartDefaultsWithoutConfig(t *testing.T) {
	w := newWorld(t)
	copyFile(t, filepath.Join("testdata", "network"), filepath.Join(w.uci, "network"))
	got := strings.Join(w.initScript(t, "start"), "\n")
	for _, dev := range []string{"eth0", "wlan0", "wwan0"} {
		if !strings.Contains(got, "[procd_append_param][netdev]["+dev+"]") {
			t.Errorf("no netdev %s without /etc/config/connmgr:\n%s", dev, got)
		}
	}
}

func TestInitReload(t *testing.T) {
	w := newWorld(t)
	got := w.initScript(t, "reload")
	want := []string{"[settings][USE_PROCD=1][START=50][STOP=10]", "[procd_send_signal][connmgr][*][HUP]"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("reload asked for\n%s\nwant only the signal\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// connmgrStandIn records its arguments and where its stdio goes, then takes its time, as a
// connmgr notify waiting on an unresponsive daemon would.
const connmgrStandIn = "#!/bin/sh\n" + record + `
record connmgr "$@" "stdin=$(readlink /proc/$$/fd/0)" "stdout=$(readlink /proc/$$/fd/1)"
sleep "${STANDIN_DELAY:-0}"
echo done >> "$STANDIN_LOG.done"
`

func TestHotplugHandsOverWithoutBlocking(t *testing.T) {
	w := newWorld(t)
	w.write(t, "bin/connmgr", connmgrStandIn, 0o755)
	hook := filepath.Join(filesDir, "etc", "hotplug.d", "iface", "50-connmgr")
	for i, action := range []string{"ifup", "ifdown", "ifupdate", "ifup-failed"} {
		os.Remove(w.log)
		os.Remove(w.log + ".done")
		delay := "0"
		if i == 0 {
			delay = "3" // once is enough to show the hook does not wait
		}
		start := time.Now()
		// hotplug-call sources each hook in a subshell.
		out, err := w.run(t, []string{"ACTION=" + action, "INTERFACE=ethnet", "DEVICE=eth0", "STANDIN_DELAY=" + delay},
			append(shell(t), "-c", `( . "$0" ); echo "hook status $?"`, hook)...)
		took := time.Since(start)
		if err != nil || out != "hook status 0\n" {
			t.Fatalf("%s: %v %q", action, err, out)
		}
		// The stand-in sleeps 3 s: the hook returning well before means it did not wait.
		if took > 2*time.Second {
			t.Errorf("%s: the hook took %v: it waits for connmgr", action, took)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat(w.log + ".done"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: connmgr notify never ran to its end", action)
			}
			time.Sleep(50 * time.Millisecond)
		}
		got := w.records(t)
		want := "[connmgr][notify][ethnet][" + action + "][stdin=/dev/null][stdout=/dev/null]"
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: connmgr called as %v, want %s", action, got, want)
		}
	}
}

func TestHotplugIgnores(t *testing.T) {
	w := newWorld(t)
	w.write(t, "bin/connmgr", connmgrStandIn, 0o755)
	hook := filepath.Join(filesDir, "etc", "hotplug.d", "iface", "50-connmgr")
	for _, env := range [][]string{
		{"ACTION=free", "INTERFACE=ethnet"},
		{"ACTION=create", "INTERFACE=ethnet"},
		{"ACTION=reload", "INTERFACE=ethnet"},
		{"ACTION=ifup"},
	} {
		out, err := w.run(t, env, append(shell(t), "-c", `( . "$0" ); echo "hook status $?"; wait`, hook)...)
		if err != nil || out != "hook status 0\n" {
			t.Errorf("%v: %v %q", env, err, out)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if got := w.records(t); got != nil {
		t.Errorf("connmgr called for ignored events: %v", got)
	}
	// No connmgr installed (package being removed): the hook still succeeds quietly.
	os.Remove(filepath.Join(w.bin, "connmgr"))
	out, err := w.run(t, []string{"ACTION=ifup", "INTERFACE=ethnet"},
		append(shell(t), "-c", `( . "$0" ); echo "hook status $?"`, hook)...)
	if err != nil || out != "hook status 0\n" {
		t.Errorf("without connmgr: %v %q", err, out)
	}
}

// uciStandIn records each uci command, with a batch's commands read from its stdin.
const uciStandIn = "#!/bin/sh\n" + record + `
record uci "$@"
if [ "$1 $2" = "-q batch" ]; then
	while IFS= read -r line; do record batch "$line"; done
fi
`

func TestUCIDefaults(t *testing.T) {
	script := filepath.Join(filesDir, "etc", "uci-defaults", "99-af-conn")
	for _, fw4 := range []bool{true, false} {
		w := newWorld(t)
		w.write(t, "bin/uci", uciStandIn, 0o755)
		if fw4 {
			w.write(t, "bin/fw4", "#!/bin/sh\nexit 0\n", 0o755)
		}
		// As /etc/init.d/boot and default_postinst run uci-defaults: sourced in a subshell,
		// removed when it succeeds.
		out, err := w.run(t, nil, append(shell(t), "-c", `( . "$0" ) && echo applied`, script)...)
		if err != nil || out != "applied\n" {
			t.Fatalf("fw4 %v: %v %q", fw4, err, out)
		}
		want := []string{
			"[uci][-q][batch]",
			"[batch][set firewall.afconn=include]",
			"[batch][set firewall.afconn.path='/usr/lib/af-conn/firewall.include']",
			"[batch][set firewall.afconn.type='script']",
			"[batch][set firewall.afconn.fw4_compatible='1']",
		}
		if !fw4 {
			want = append(want, "[uci][-q][set][firewall.afconn.reload=1]")
		}
		want = append(want, "[uci][commit][firewall]")
		if got := w.records(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("fw4 %v: uci calls\n%s\nwant\n%s", fw4, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestSwitchRoute(t *testing.T) {
	w := newWorld(t)
	w.write(t, "bin/connmgr", connmgrStandIn, 0o755)
	script := filepath.Join(filesDir, "usr", "lib", "af-conn", "switch_route.sh")
	out, err := w.run(t, nil, append(shell(t), script, "wlan0")...)
	if err != nil {
		t.Fatalf("%v %q", err, out)
	}
	if got := w.records(t); len(got) != 1 || !strings.HasPrefix(got[0], "[connmgr][switch][wlan0][stdin=") {
		t.Errorf("connmgr called as %v", got)
	}
	os.Remove(w.log)
	for _, args := range [][]string{{}, {"a", "b"}} {
		out, err := w.run(t, nil, append(append(shell(t), script), args...)...)
		if err == nil || !bytes.Contains([]byte(out), []byte("usage")) {
			t.Errorf("%v: %v %q, want a usage error", args, err, out)
		}
	}
	if got := w.records(t); got != nil {
		t.Errorf("connmgr called on bad usage: %v", got)
	}
}

// TestFirewallInclude runs the firewall include as fw4 runs script includes (sh -c with the
// lock descriptor closed and config() made to fail, then the file sourced) and as fw3 does:
// it must succeed, promptly, and ask connmgr to restore its rules.
func TestFirewallInclude(t *testing.T) {
	include := filepath.Join(filesDir, "usr", "lib", "af-conn", "firewall.include")
	if _, err := os.Stat(include); os.IsNotExist(err) {
		t.Skip("files/usr/lib/af-conn/firewall.include does not exist yet")
	}
	w := newWorld(t)
	w.write(t, "bin/connmgr", connmgrStandIn, 0o755)
	for _, runner := range []string{
		// fw4 (firewall4 main.uc run_includes)
		`exec 1000>&-; config() { echo "You cannot use UCI in firewall includes!" >&2; exit 1; }; . "$0"`,
		// fw3 (includes.c)
		`config() { echo "You cannot use UCI in firewall includes!" >&2; exit 1; }; . "$0"`,
	} {
		os.Remove(w.log)
		start := time.Now()
		out, err := w.run(t, nil, append(shell(t), "-c", runner, include)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("the include took %v", took)
		}
		got := strings.Join(w.records(t), "\n")
		if !strings.Contains(got, "[connmgr][fw][restore]") {
			t.Errorf("connmgr called as\n%s\nwant connmgr fw restore", got)
		}
	}
}
