package main

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/apkv3"
	"github.com/afero/af-conn/internal/feedpkg"
)

// TestStockApk is issue 12's check against stock apk-tools 3, the package manager of OpenWrt
// 25.12, for each of the five packages `make apk` built:
//
//   - the stock `apk mkpkg`, given the same files, info fields and scripts as package-pack.mk
//     passes it, writes byte for byte the package ours is before compression;
//   - `apk add` installs it offline into a root with OpenWrt's base-files scripts (--root,
//     --arch, --allow-untrusted, --no-network; --force-no-chroot --preserve-env with
//     IPKG_INSTROOT naming the root, so that the scripts take base-files' image-root path,
//     as opkg -o does): every file in place with its content and mode, the post-install
//     script enabled the service (/etc/rc.d links), nothing called this machine's ubus,
//     `apk audit` finds nothing changed;
//   - an upgrade to a package whose default /etc/config/connmgr changed keeps the edited
//     one and puts the new default beside it as connmgr.apk-new;
//   - `apk del` disables the service and removes everything else;
//   - installed as the image build installs it (`apk add --no-scripts`, then the kept
//     post-install script run with IPKG_INSTROOT), the service is enabled too.
//
// It runs only when AFCONN_STOCK_APK names the stock apk (built by hand from
// alpinelinux/apk-tools; nothing in this repository builds or ships it) with, next to it, a
// root/ holding OpenWrt's base-files scripts: /lib/functions.sh, /lib/functions/procd.sh,
// /lib/functions/service.sh, /etc/rc.common and libubox's /usr/share/libubox/jshn.sh. The
// packages are read from AFCONN_IPK_DIR/<arch>/ (`make check-apk` builds them and runs this).
func TestStockApk(t *testing.T) {
	forEachBuilt(t, "AFCONN_STOCK_APK", "apk", func(dir, arch string) string {
		return filepath.Join(dir, arch, "af-conn-*.apk")
	}, func(t *testing.T, stock, arch, apk string) {
		data, err := os.ReadFile(apk)
		if err != nil {
			t.Fatal(err)
		}
		pkg, err := apkv3.Read(data)
		if err != nil {
			t.Fatalf("%s: %v", apk, err)
		}
		s := &stockApk{t: t, apk: stock, arch: arch}
		s.compareMkpkg(data, pkg)
		s.imageInstall(apk, pkg)
		s.installUpgradeRemove(apk, pkg)
	})
}

type stockApk struct {
	t          *testing.T
	apk, arch  string
	root, trip string
}

// run runs the stock apk with env added and returns its output; failing runs fail the test.
func (s *stockApk) run(env []string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.apk, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	s.t.Logf("apk %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		s.t.Fatalf("apk %s: %v", strings.Join(args, " "), err)
	}
	if bytes.Contains(out, []byte("ERROR")) || bytes.Contains(out, []byte("WARNING")) {
		s.t.Errorf("apk %s reported a problem", strings.Join(args, " "))
	}
	return string(out)
}

// inRoot runs an apk command on the offline root.
func (s *stockApk) inRoot(args ...string) string {
	s.t.Helper()
	return s.run([]string{"IPKG_INSTROOT=" + s.root, "PATH=" + s.trip + ":" + os.Getenv("PATH")},
		append([]string{"--root", s.root, "--arch", s.arch, "--allow-untrusted", "--no-network", "--no-cache",
			"--force-no-chroot", "--preserve-env"}, args...)...)
}

func inflated(t *testing.T, apk []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(apk, []byte("ADBd")) {
		t.Fatalf("package starts %q, want ADBd", apk[:min(4, len(apk))])
	}
	b, err := io.ReadAll(flate.NewReader(bytes.NewReader(apk[4:])))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compareMkpkg lays the package's files out on disk and packs them with the stock apk mkpkg
// as package-pack.mk calls it; the two must be the same bytes once decompressed.
func (s *stockApk) compareMkpkg(ours []byte, pkg *apkv3.Decoded) {
	t := s.t
	tree := filepath.Join(t.TempDir(), "ipkg-"+s.arch)
	var epoch uint64
	for _, d := range pkg.Dirs {
		p := filepath.Join(tree, d.Name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fs.FileMode(d.Mode)); err != nil {
			t.Fatal(err)
		}
		for _, f := range d.Files {
			fp := filepath.Join(p, f.Name)
			if err := os.WriteFile(fp, f.Data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(fp, fs.FileMode(f.Mode)); err != nil {
				t.Fatal(err)
			}
			epoch = f.MTime
		}
	}
	scripts := t.TempDir()
	args := []string{"mkpkg",
		"--info", "name:" + pkg.Info.Name, "--info", "version:" + pkg.Info.Version,
		"--info", "description:" + pkg.Info.Description, "--info", "arch:" + pkg.Info.Arch,
		"--info", "license:" + pkg.Info.License, "--info", "origin:" + pkg.Info.Origin,
		"--info", "url:" + pkg.Info.URL, "--info", "maintainer:" + pkg.Info.Maintainer,
		"--info", "provides:" + strings.Join(pkg.Info.Provides, " "),
	}
	for _, name := range []string{"post-install", "post-upgrade", "pre-deinstall"} {
		p := filepath.Join(scripts, name)
		if err := os.WriteFile(p, []byte(pkg.Scripts[name]), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--script", name+":"+p)
	}
	out := filepath.Join(t.TempDir(), "stock.apk")
	args = append(args, "--info", "depends:"+strings.Join(s.feedDepends(pkg.Info.Depends), " "), "--files", tree, "--output", out)
	s.run([]string{"SOURCE_DATE_EPOCH=" + strconv.FormatUint(epoch, 10)}, args...)
	stock, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	a, b := inflated(t, ours), inflated(t, stock)
	if !bytes.Equal(a, b) {
		n := 0
		for n < len(a) && n < len(b) && a[n] == b[n] {
			n++
		}
		t.Errorf("our package differs from stock apk mkpkg's from byte %d of %d (stock: %d bytes)", n, len(a), len(b))
	}
	t.Logf("apk mkpkg wrote the same %d bytes; compressed: ours %d, stock %d", len(a), len(ours), len(stock))
}

// feedDepends is the package's dependency list in the order package-pack.mk passes it
// (the feed's DEPENDS resolved for the image's firewall), which is the order apk mkpkg
// writes the entries in; the package itself keeps them sorted.
func (s *stockApk) feedDepends(sorted []string) []string {
	for fw := range firewalls {
		config := map[string]string{}
		if firewalls[fw] != "" {
			config["CONFIG_PACKAGE_"+firewalls[fw]] = "y"
		}
		def, err := readFeed(feedDir, config)
		if err != nil {
			s.t.Fatal(err)
		}
		deps := feedpkg.ResolveDepends(def.Depends, config)
		if slices.Equal(slices.Sorted(slices.Values(deps)), sorted) {
			return deps
		}
	}
	s.t.Fatalf("depends %q: not the feed's for any firewall", sorted)
	return nil
}

// newRoot copies the skeleton root (root/ next to the stock apk) for one install and sets
// up the ubus tripwire; it returns the tripwire's log.
func (s *stockApk) newRoot() string {
	t := s.t
	stockRoot := filepath.Join(filepath.Dir(s.apk), "root")
	s.root = filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", stockRoot, s.root).CombinedOutput(); err != nil {
		t.Fatalf("copy the skeleton root %s: %v\n%s", stockRoot, err, out)
	}
	for _, f := range []string{"lib/functions.sh", "etc/rc.common", "lib/functions/procd.sh", "usr/share/libubox/jshn.sh"} {
		if _, err := os.Stat(filepath.Join(s.root, f)); err != nil {
			t.Fatalf("the skeleton root lacks OpenWrt's /%s, so the package's scripts would do nothing: %v", f, err)
		}
	}
	// A tripwire: an offline install must not talk to this machine's ubus (procd).
	s.trip = t.TempDir()
	tripLog := filepath.Join(s.trip, "log")
	if err := os.WriteFile(filepath.Join(s.trip, "ubus"), []byte("#!/bin/sh\necho \"ubus $*\" >> "+tripLog+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return tripLog
}

// stubs packs empty packages named as the package's dependencies: what the image has.
func (s *stockApk) stubs(pkg *apkv3.Decoded) []string {
	dir := s.t.TempDir()
	var files []string
	for _, d := range pkg.Info.Depends {
		p := filepath.Join(dir, d+".apk")
		s.run([]string{"SOURCE_DATE_EPOCH=1700000000"}, "mkpkg", "--info", "name:"+d, "--info", "version:1-r0", "--info", "arch:"+s.arch, "--output", p)
		files = append(files, p)
	}
	return files
}

// imageInstall installs the package the way OpenWrt's image build does (include/rootfs.mk):
// `apk add --no-scripts` into the image root, then the post-install script apk kept in
// lib/apk/db/scripts.tar.gz run by bash with IPKG_INSTROOT set. apk names the kept scripts
// by the package's unique id, so the id must be the package's.
func (s *stockApk) imageInstall(apkFile string, pkg *apkv3.Decoded) {
	t := s.t
	tripLog := s.newRoot()
	s.run([]string{"IPKG_INSTROOT=" + s.root}, append(append([]string{"--root", s.root, "--arch", s.arch,
		"--allow-untrusted", "--no-network", "--no-cache", "--no-scripts", "add", "--initdb"}, s.stubs(pkg)...), apkFile)...)
	f, err := os.Open(filepath.Join(s.root, "lib/apk/db/scripts.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("af-conn-%s.X1%x.post-install", pkg.Info.Version, pkg.UniqueID)
	var script []byte
	for tr := tar.NewReader(zr); ; {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == want {
			script, _ = io.ReadAll(tr)
		}
	}
	if script == nil {
		t.Fatalf("lib/apk/db/scripts.tar.gz has no %s", want)
	}
	p := filepath.Join(s.root, "tmp", want)
	if err := os.WriteFile(p, script, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", p)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+s.root, "PATH="+s.trip+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the image build's post-install: %v\n%s", err, out)
	}
	s.checkFiles(pkg, nil)
	s.checkEnabled(true)
	if b, err := os.ReadFile(tripLog); err == nil {
		t.Errorf("the image build's post-install reached for this machine's ubus:\n%s", b)
	}
}

func (s *stockApk) installUpgradeRemove(apkFile string, pkg *apkv3.Decoded) {
	t := s.t
	tripLog := s.newRoot()
	stubFiles := s.stubs(pkg)

	out := s.inRoot(append(append([]string{"add", "--initdb"}, stubFiles...), apkFile)...)
	if !strings.Contains(out, "Installing af-conn ("+pkg.Info.Version+")") || !strings.Contains(out, "af-conn-"+pkg.Info.Version+".post-install") {
		t.Errorf("apk add did not install af-conn and run its post-install script")
	}
	s.checkFiles(pkg, nil)
	s.checkEnabled(true)
	s.checkAudit(pkg)
	if db, _ := os.ReadFile(filepath.Join(s.root, "lib/apk/db/installed")); !bytes.Contains(db, []byte("P:af-conn\nV:"+pkg.Info.Version+"\n")) {
		t.Errorf("apk's installed database lacks af-conn %s", pkg.Info.Version)
	}

	// The user edits the configuration; the next release changes its default.
	cfg := filepath.Join(s.root, "etc/config/connmgr")
	edited := []byte("config connmgr 'main'\n\toption enabled '1'\n# edited on the device\n")
	if err := os.WriteFile(cfg, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	next, newDefault := s.nextRelease(pkg)
	nextPkg, err := apkv3.Read(mustRead(t, next))
	if err != nil {
		t.Fatal(err)
	}
	out = s.inRoot("add", next)
	if !strings.Contains(out, "Upgrading af-conn ("+pkg.Info.Version+" -> "+nextPkg.Info.Version+")") || !strings.Contains(out, ".post-upgrade") {
		t.Errorf("apk add of the next release did not upgrade with the post-upgrade script")
	}
	if got, _ := os.ReadFile(cfg); !bytes.Equal(got, edited) {
		t.Errorf("the upgrade replaced the edited /etc/config/connmgr:\n%s", got)
	}
	if got, _ := os.ReadFile(cfg + ".apk-new"); !bytes.Equal(got, newDefault) {
		t.Errorf("/etc/config/connmgr.apk-new is not the new default:\n%s", got)
	}
	s.checkFiles(nextPkg, map[string]bool{"/etc/config/connmgr": true})
	s.checkEnabled(true)
	if out := s.inRoot("audit", "--system", "--check-permissions"); strings.TrimSpace(out) != "" {
		t.Errorf("apk audit --system after the upgrade:\n%s", out)
	}

	out = s.inRoot("del", "af-conn")
	if !strings.Contains(out, "af-conn-"+nextPkg.Info.Version+".pre-deinstall") {
		t.Errorf("apk del did not run the pre-deinstall script")
	}
	s.checkEnabled(false)
	for _, d := range nextPkg.Dirs {
		for _, f := range d.Files {
			p := "/" + filepath.Join(d.Name, f.Name)
			_, err := os.Lstat(filepath.Join(s.root, p))
			if p == "/etc/config/connmgr" {
				if err != nil {
					t.Errorf("apk del removed the edited %s (apk keeps changed configuration)", p)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s left behind by apk del", p)
			}
		}
	}
	if _, err := os.Lstat(cfg + ".apk-new"); err == nil {
		t.Error("/etc/config/connmgr.apk-new left behind by apk del")
	}
	if db, _ := os.ReadFile(filepath.Join(s.root, "lib/apk/db/installed")); bytes.Contains(db, []byte("P:af-conn\n")) {
		t.Error("af-conn still in apk's installed database")
	}
	if b, err := os.ReadFile(tripLog); err == nil {
		t.Errorf("the scripts reached for this machine's ubus:\n%s", b)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkFiles: every file of the package is in the root with its content and mode.
func (s *stockApk) checkFiles(pkg *apkv3.Decoded, skip map[string]bool) {
	for _, d := range pkg.Dirs {
		for _, f := range d.Files {
			p := "/" + filepath.Join(d.Name, f.Name)
			if skip[p] {
				continue
			}
			got, err := os.ReadFile(filepath.Join(s.root, p))
			if err != nil {
				s.t.Errorf("not installed: %s (%v)", p, err)
				continue
			}
			if !bytes.Equal(got, f.Data) {
				s.t.Errorf("%s installed with other content", p)
			}
			if fi, _ := os.Stat(filepath.Join(s.root, p)); uint32(fi.Mode().Perm()) != f.Mode {
				s.t.Errorf("%s installed with mode %o, package says %o", p, fi.Mode().Perm(), f.Mode)
			}
		}
	}
}

func (s *stockApk) checkEnabled(want bool) {
	links, _ := filepath.Glob(filepath.Join(s.root, "etc/rc.d/[SK]*connmgr"))
	if !want {
		if len(links) != 0 {
			s.t.Errorf("the service is still enabled: %v", links)
		}
		return
	}
	start, _ := filepath.Glob(filepath.Join(s.root, "etc/rc.d/S*connmgr"))
	if len(start) != 1 {
		s.t.Errorf("the service is not enabled: /etc/rc.d has %v", links)
		return
	}
	if dest, _ := os.Readlink(start[0]); dest != "../init.d/connmgr" {
		s.t.Errorf("%s -> %s", start[0], dest)
	}
}

// checkAudit: apk audit finds no package file changed, neither among all files (--system)
// nor among the configuration files (the default, --backup); the skeleton's own files and
// the /etc/rc.d links are not the package's and may be listed.
func (s *stockApk) checkAudit(pkg *apkv3.Decoded) {
	if out := s.inRoot("audit", "--system", "--check-permissions"); strings.TrimSpace(out) != "" {
		s.t.Errorf("apk audit --system --check-permissions:\n%s", out)
	}
	owned := map[string]bool{}
	for _, d := range pkg.Dirs {
		for _, f := range d.Files {
			owned[filepath.Join(d.Name, f.Name)] = true
		}
	}
	for _, line := range strings.Split(s.inRoot("audit", "--check-permissions"), "\n") {
		if _, p, ok := strings.Cut(line, " "); ok && owned[p] {
			s.t.Errorf("apk audit: %s", line)
		}
	}
}

// nextRelease packs the next release of the package with `mkipk -format apk` from a copy of
// the feed whose default /etc/config/connmgr gained a line; it returns the package and that
// new default.
func (s *stockApk) nextRelease(pkg *apkv3.Decoded) (string, []byte) {
	t := s.t
	top := t.TempDir()
	for _, p := range []string{"openwrt", "files"} {
		if out, err := exec.Command("cp", "-a", filepath.Join("..", "..", "..", p), top).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", p, err, out)
		}
	}
	cfgPath := filepath.Join(top, "files", "etc", "config", "connmgr")
	newDefault := append(mustRead(t, cfgPath), "# a new default of the next release\n"...)
	if err := os.WriteFile(cfgPath, newDefault, 0o644); err != nil {
		t.Fatal(err)
	}
	bin, _ := pkg.File("/usr/sbin/connmgr")
	binPath := filepath.Join(t.TempDir(), "connmgr")
	if err := os.WriteFile(binPath, bin.Data, 0o755); err != nil {
		t.Fatal(err)
	}
	base, rel, ok := strings.Cut(pkg.Info.Version, "-r")
	n, err := strconv.Atoi(rel)
	if !ok || err != nil {
		t.Fatalf("version %s: want PKG_VERSION-rPKG_RELEASE", pkg.Info.Version)
	}
	out := t.TempDir()
	var stdout bytes.Buffer
	file, _ := pkg.File("/usr/sbin/connmgr")
	env := func(k string) string {
		return map[string]string{"SOURCE_DATE_EPOCH": strconv.FormatUint(file.MTime+1, 10)}[k]
	}
	if err := run([]string{"-feed", filepath.Join(top, "openwrt", "af-conn"), "-format", "apk", "-arch", s.arch,
		"-bin", binPath, "-out", out, "-version", fmt.Sprintf("%s-r%d", base, n+1)}, &stdout, env); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(stdout.String()), newDefault
}
