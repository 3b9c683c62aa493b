package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestStockOpkg is issue 6's check against the stock package manager: each of the five
// packages `make ipk` built is installed with the stock opkg (openwrt opkg-lede) into an
// offline root, as `opkg -o ROOT install` does for an image: every file of the package must be
// in place with its content and mode, the post-install script must run without error and enable
// the service (the /etc/rc.d link is its mark), nothing may reach for this machine's ubus or
// procd, and `opkg remove` must take it all away again.
//
// It runs only when AFCONN_STOCK_OPKG names a directory holding `opkg-cl` (and its `lib/`, if
// it needs one) and `root/`: a skeleton root with OpenWrt's base-files scripts the package's
// scripts source (`/lib/functions.sh`, `/lib/functions/{procd,service}.sh`, `/etc/rc.common`,
// `/usr/share/libubox/jshn.sh`). Both are put together by hand from openwrt sources; nothing in
// this repository builds or ships them. The packages are read from AFCONN_IPK_DIR, by default
// the repository's build/ (`make check-opkg` builds them and runs this test).
func TestStockOpkg(t *testing.T) {
	forEachBuilt(t, "AFCONN_STOCK_OPKG", "opkg", func(dir, arch string) string {
		return filepath.Join(dir, "af-conn_*_"+arch+".ipk")
	}, installWithStockOpkg)
}

// forEachBuilt runs check, in a subtest per architecture, on the package of that
// architecture `make ipk` or `make apk` built (the one file matching pattern under
// AFCONN_IPK_DIR, by default the repository's build/), with the stock tool that the variable
// stockVar names; without that variable there is nothing to check with and the test skips.
func forEachBuilt(t *testing.T, stockVar, tool string, pattern func(dir, arch string) string, check func(t *testing.T, stock, arch, pkg string)) {
	stock := os.Getenv(stockVar)
	if stock == "" {
		t.Skipf("%s not set: no stock %s to install with", stockVar, tool)
	}
	dir := os.Getenv("AFCONN_IPK_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "build")
	}
	for _, tg := range targets {
		t.Run(tg.arch, func(t *testing.T) {
			found, _ := filepath.Glob(pattern(dir, tg.arch))
			if len(found) != 1 {
				t.Fatalf("want one af-conn package matching %s, found %v", pattern(dir, tg.arch), found)
			}
			check(t, stock, tg.arch, found[0])
		})
	}
}

func installWithStockOpkg(t *testing.T, stock, arch, ipk string) {
	pkg := unpack(t, ipk)
	root := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", filepath.Join(stock, "root"), root).CombinedOutput(); err != nil {
		t.Fatalf("copy the skeleton root: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "lib/functions.sh")); err != nil {
		t.Fatalf("the skeleton root lacks OpenWrt's /lib/functions.sh, so the package's scripts would do nothing: %v", err)
	}
	// What the package depends on is already installed in the image, as far as opkg knows.
	deps := regexp.MustCompile(`(?m)^Depends: (.*)$`).FindStringSubmatch(pkg.control)
	if deps == nil {
		t.Fatalf("control has no Depends:\n%s", pkg.control)
	}
	var status strings.Builder
	info := filepath.Join(root, "usr/lib/opkg/info")
	if err := os.MkdirAll(info, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range strings.Split(deps[1], ",") {
		d = strings.TrimSpace(d)
		status.WriteString("Package: " + d + "\nVersion: 1\nStatus: install user installed\nArchitecture: " + arch + "\nInstalled-Time: 1700000000\n\n")
		if err := os.WriteFile(filepath.Join(info, d+".list"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/opkg/status"), []byte(status.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "opkg.conf")
	if err := os.WriteFile(conf, []byte("dest root /\nlists_dir ext /var/opkg-lists\narch all 1\narch noarch 1\narch "+arch+" 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A tripwire: an offline install must not talk to this machine's ubus (procd).
	trip := t.TempDir()
	tripLog := filepath.Join(trip, "log")
	if err := os.WriteFile(filepath.Join(trip, "ubus"), []byte("#!/bin/sh\necho \"ubus $*\" >> "+tripLog+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opkg := func(args ...string) string {
		t.Helper()
		// --force-postinstall: opkg skips the scripts of an offline install otherwise.
		cmd := exec.Command(filepath.Join(stock, "opkg-cl"), append([]string{"-f", conf, "-o", root, "--force-postinstall"}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+trip+":"+os.Getenv("PATH"), "IPKG_INSTROOT="+root,
			"LD_LIBRARY_PATH="+filepath.Join(stock, "lib"))
		out, err := cmd.CombinedOutput()
		t.Logf("opkg %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("opkg %s: %v", strings.Join(args, " "), err)
		}
		if bytes.Contains(bytes.ToLower(out), []byte("error")) {
			t.Errorf("opkg %s reported an error", strings.Join(args, " "))
		}
		return string(out)
	}

	opkg("install", ipk)
	for name, h := range pkg.files {
		if h.Typeflag != '0' {
			continue
		}
		path := filepath.Join(root, strings.TrimPrefix(name, "./"))
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("not installed: %s (%v)", name, err)
			continue
		}
		if !bytes.Equal(got, pkg.data[name]) {
			t.Errorf("%s installed with other content", name)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != os.FileMode(h.Mode).Perm() {
			t.Errorf("%s installed with mode %v, package says %v", name, fi.Mode().Perm(), os.FileMode(h.Mode).Perm())
		}
	}
	links, _ := filepath.Glob(filepath.Join(root, "etc/rc.d/S*connmgr"))
	if len(links) != 1 {
		t.Errorf("post-install did not enable the service: /etc/rc.d has %v", links)
	} else if dest, _ := os.Readlink(links[0]); dest != "../init.d/connmgr" {
		t.Errorf("%s -> %s", links[0], dest)
	}
	if got, _ := os.ReadFile(filepath.Join(info, "af-conn.conffiles")); string(got) != pkg.conffiles {
		t.Errorf("opkg's conffiles %q, package's %q", got, pkg.conffiles)
	}
	if out := opkg("list-installed"); !strings.Contains(out, "af-conn - ") {
		t.Errorf("opkg list-installed lacks af-conn")
	}

	opkg("remove", "af-conn")
	if links, _ := filepath.Glob(filepath.Join(root, "etc/rc.d/*connmgr")); len(links) != 0 {
		t.Errorf("pre-remove left the service enabled: %v", links)
	}
	for _, f := range []string{"usr/sbin/connmgr", "etc/init.d/connmgr"} {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			t.Errorf("/%s left behind by opkg remove", f)
		}
	}
	if b, err := os.ReadFile(tripLog); err == nil {
		t.Errorf("the scripts reached for this machine's ubus:\n%s", b)
	}
}
