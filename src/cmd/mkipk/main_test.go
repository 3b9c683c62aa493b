package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/apkv3"
	"github.com/afero/af-conn/internal/ipk"
)

var (
	feedDir  = filepath.Join("..", "..", "..", "openwrt", "af-conn")
	filesDir = filepath.Join("..", "..", "..", "files")
)

// fakeELF writes the ELF header (and with interp a PT_INTERP program header) of an executable
// for t: enough for the architecture check, without cross-compiling a program in a unit test.
func fakeELF(t *testing.T, tg target, typ elf.Type, interp bool) string {
	t.Helper()
	var order binary.ByteOrder = binary.LittleEndian
	if tg.data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(tg.class), byte(tg.data), 1, 0})
	b.Write(make([]byte, 8))
	w := func(v any) { _ = binary.Write(&b, order, v) }
	phnum := uint16(0)
	if interp {
		phnum = 1
	}
	if tg.class == elf.ELFCLASS64 {
		w(uint16(typ))
		w(uint16(tg.machine))
		w(uint32(1))
		w(uint64(0x400000)) // entry
		w(uint64(64))       // phoff
		w(uint64(0))        // shoff
		w(uint32(0))
		w(uint16(64))
		w(uint16(56))
		w(phnum)
		w(uint16(64))
		w(uint16(0))
		w(uint16(0))
		if interp {
			w(uint32(elf.PT_INTERP))
			w(uint32(4))
			for i := 0; i < 6; i++ {
				w(uint64(0))
			}
		}
	} else {
		w(uint16(typ))
		w(uint16(tg.machine))
		w(uint32(1))
		w(uint32(0x400000))
		w(uint32(52))
		w(uint32(0))
		w(uint32(0))
		w(uint16(52))
		w(uint16(32))
		w(phnum)
		w(uint16(40))
		w(uint16(0))
		w(uint16(0))
		if interp {
			w(uint32(elf.PT_INTERP))
			for i := 0; i < 7; i++ {
				w(uint32(0))
			}
		}
	}
	path := filepath.Join(t.TempDir(), "connmgr")
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckBinary(t *testing.T) {
	for _, tg := range targets {
		if err := tg.checkBinary(fakeELF(t, tg, elf.ET_EXEC, false)); err != nil {
			t.Errorf("%s: %v", tg.arch, err)
		}
		if err := tg.checkBinary(fakeELF(t, tg, elf.ET_EXEC, true)); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			t.Errorf("%s, dynamic: %v", tg.arch, err)
		}
		if err := tg.checkBinary(fakeELF(t, tg, elf.ET_DYN, false)); err == nil {
			t.Errorf("%s, position-independent: no error", tg.arch)
		}
		for _, other := range targets {
			if other.arch != tg.arch {
				if err := tg.checkBinary(fakeELF(t, other, elf.ET_EXEC, false)); err == nil {
					t.Errorf("%s binary packed for %s", other.arch, tg.arch)
				}
			}
		}
	}
	if err := targets[0].checkBinary(filepath.Join(filesDir, "etc", "init.d", "connmgr")); err == nil {
		t.Error("a shell script passed as the binary")
	}
}

func TestGoEnvAndArchs(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-goenv", "mipsel_24kc"}, &out, os.Getenv); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != "GOOS=linux CGO_ENABLED=0 GOARCH=mipsle GOMIPS=softfloat" {
		t.Errorf("goenv %q", got)
	}
	out.Reset()
	if err := run([]string{"-archs"}, &out, os.Getenv); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out.String()); len(got) != 5 || got[0] != "mipsel_24kc" {
		t.Errorf("archs %v", got)
	}
	if err := run([]string{"-goenv", "ppc"}, &out, os.Getenv); err == nil {
		t.Error("unknown arch accepted")
	}
}

type unpacked struct {
	control, conffiles, postinst, prerm string
	files                               map[string]tar.Header
	data                                map[string][]byte
}

func readTarGz(t *testing.T, b []byte, each func(h *tar.Header, data []byte)) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		each(h, data)
	}
}

func unpack(t *testing.T, path string) *unpacked {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := &unpacked{files: map[string]tar.Header{}, data: map[string][]byte{}}
	var order []string
	readTarGz(t, raw, func(h *tar.Header, data []byte) {
		order = append(order, h.Name)
		switch h.Name {
		case "./control.tar.gz":
			readTarGz(t, data, func(h *tar.Header, data []byte) {
				switch h.Name {
				case "./control":
					u.control = string(data)
				case "./conffiles":
					u.conffiles = string(data)
				case "./postinst":
					u.postinst = string(data)
				case "./prerm":
					u.prerm = string(data)
				}
			})
		case "./data.tar.gz":
			readTarGz(t, data, func(h *tar.Header, data []byte) {
				u.files[h.Name] = *h
				u.data[h.Name] = data
			})
		}
	})
	if got := strings.Join(order, " "); got != "./debian-binary ./data.tar.gz ./control.tar.gz" {
		t.Fatalf("outer archive %s", got)
	}
	return u
}

type wantFile struct {
	mode uint32
	data []byte
}

// wantFiles are files a package of the feed must hold, by path, with the program bin.
func wantFiles(t *testing.T, bin string) map[string]wantFile {
	t.Helper()
	want := map[string]wantFile{}
	for p, w := range map[string]struct {
		mode uint32
		src  string
	}{
		"/usr/sbin/connmgr":                 {0o755, bin},
		"/etc/config/connmgr":               {0o600, "etc/config/connmgr"},
		"/etc/af-conn/whitelist":            {0o600, "etc/af-conn/whitelist.prod"},
		"/etc/init.d/connmgr":               {0o755, "etc/init.d/connmgr"},
		"/etc/hotplug.d/iface/50-connmgr":   {0o644, "etc/hotplug.d/iface/50-connmgr"},
		"/etc/uci-defaults/99-af-conn":      {0o644, "etc/uci-defaults/99-af-conn"},
		"/usr/lib/af-conn/switch_route.sh":  {0o755, "usr/lib/af-conn/switch_route.sh"},
		"/usr/lib/af-conn/firewall.include": {0o644, "usr/lib/af-conn/firewall.include"},
		"/usr/share/acl.d/af-conn.json":     {0o644, "usr/share/acl.d/af-conn.json"},
	} {
		src := w.src
		if src != bin {
			src = filepath.Join(filesDir, w.src)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		want[p] = wantFile{w.mode, data}
	}
	return want
}

// TestPackFeed packs the repository's feed for every architecture and unpacks the result.
func TestPackFeed(t *testing.T) {
	for _, tg := range targets {
		bin := fakeELF(t, tg, elf.ET_EXEC, false)
		out := t.TempDir()
		var stdout bytes.Buffer
		env := func(k string) string { return map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}[k] }
		err := run([]string{"-feed", feedDir, "-arch", tg.arch, "-bin", bin, "-out", out, "-version", "9.8.7-6"}, &stdout, env)
		if err != nil {
			t.Fatalf("%s: %v", tg.arch, err)
		}
		path := filepath.Join(out, "af-conn_9.8.7-6_"+tg.arch+".ipk")
		if strings.TrimSpace(stdout.String()) != path {
			t.Errorf("printed %q, want %q", stdout.String(), path)
		}
		u := unpack(t, path)

		for _, want := range []string{
			"Package: af-conn\nVersion: 9.8.7-6\nDepends: libc, kmod-nf-conntrack-netlink, kmod-nft-queue\n",
			"\nSource: feeds/afconn/af-conn\nSourceName: af-conn\n",
			"\nSection: net\nSourceDateEpoch: 1700000000\n",
			"\nArchitecture: " + tg.arch + "\nInstalled-Size: ",
			"\nDescription:  connmgr keeps an IoT hub",
		} {
			if !strings.Contains(u.control, want) {
				t.Errorf("%s: control lacks %q:\n%s", tg.arch, want, u.control)
			}
		}
		if u.conffiles != "/etc/af-conn/whitelist\n/etc/config/connmgr\n" {
			t.Errorf("%s: conffiles %q", tg.arch, u.conffiles)
		}
		if u.postinst != ipk.Postinst || u.prerm != ipk.Prerm {
			t.Errorf("%s: maintainer scripts %q %q", tg.arch, u.postinst, u.prerm)
		}

		for p, w := range wantFiles(t, bin) {
			name := "." + p
			h, ok := u.files[name]
			if !ok {
				t.Errorf("%s: no %s", tg.arch, name)
				continue
			}
			if h.Mode != int64(w.mode) || !bytes.Equal(u.data[name], w.data) {
				t.Errorf("%s: %s mode %o (%d bytes), want %o (%d bytes)", tg.arch, name, h.Mode, len(u.data[name]), w.mode, len(w.data))
			}
		}
		for name, h := range u.files {
			if h.Typeflag == tar.TypeDir && h.Mode != 0o755 {
				t.Errorf("%s: directory %s mode %o", tg.arch, name, h.Mode)
			}
			if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 1700000000 {
				t.Errorf("%s: %s owner %d:%d time %v", tg.arch, name, h.Uid, h.Gid, h.ModTime)
			}
		}
	}
}

func TestPackOptions(t *testing.T) {
	tg := targets[0]
	bin := fakeELF(t, tg, elf.ET_EXEC, false)
	env := func(k string) string { return map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}[k] }
	out := t.TempDir()
	var stdout bytes.Buffer
	err := run([]string{"-feed", feedDir, "-arch", tg.arch, "-bin", bin, "-out", out,
		"-firewall", "fw3", "-config", "CONFIG_AF_CONN_WHITELIST_DEV=y"}, &stdout, env)
	if err != nil {
		t.Fatal(err)
	}
	u := unpack(t, strings.TrimSpace(stdout.String()))
	if !strings.Contains(u.control, "\nDepends: libc, kmod-nf-conntrack-netlink, kmod-ipt-nfqueue, kmod-ipt-ipset, iptables, iptables-mod-nfqueue\n") {
		t.Errorf("fw3 control:\n%s", u.control)
	}
	dev, _ := os.ReadFile(filepath.Join(filesDir, "etc", "af-conn", "whitelist.dev"))
	if !bytes.Equal(u.data["./etc/af-conn/whitelist"], dev) {
		t.Error("-config CONFIG_AF_CONN_WHITELIST_DEV=y did not install whitelist.dev")
	}

	// Same inputs, same bytes.
	first, _ := os.ReadFile(strings.TrimSpace(stdout.String()))
	stdout.Reset()
	if err := run([]string{"-feed", feedDir, "-arch", tg.arch, "-bin", bin, "-out", out,
		"-firewall", "fw3", "-config", "CONFIG_AF_CONN_WHITELIST_DEV=y"}, &stdout, env); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(strings.TrimSpace(stdout.String()))
	if !bytes.Equal(first, second) {
		t.Error("packing twice gave different bytes")
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 {
		t.Errorf("output directory holds %d files, want the one package", len(entries))
	}

	for name, args := range map[string][]string{
		"no epoch":     {"-feed", feedDir, "-arch", tg.arch, "-bin", bin, "-out", out},
		"bad firewall": {"-feed", feedDir, "-firewall", "pf"},
		"bad config":   {"-feed", feedDir, "-config", "X=1"},
		"wrong arch":   {"-feed", feedDir, "-arch", "x86_64", "-bin", bin, "-out", out},
		"no feed":      {"-arch", tg.arch},
		"no out":       {"-feed", feedDir, "-arch", tg.arch, "-bin", bin},
	} {
		getenv := env
		if name == "no epoch" {
			getenv = func(string) string { return "" }
		}
		if err := run(args, io.Discard, getenv); err == nil {
			t.Errorf("%s: no error", name)
		}
	}

	stdout.Reset()
	if err := run([]string{"-feed", feedDir, "-print-version"}, &stdout, env); err != nil {
		t.Fatal(err)
	}
	if v := strings.TrimSpace(stdout.String()); !strings.Contains(v, "-") {
		t.Errorf("version %q, want PKG_VERSION-PKG_RELEASE", v)
	}

	// The build tags follow the image's firewall: the iptables backend only for fw3.
	for fw, want := range map[string]string{"fw4": "noiptables", "none": "noiptables", "fw3": ""} {
		stdout.Reset()
		if err := run([]string{"-feed", feedDir, "-firewall", fw, "-print-tags"}, &stdout, env); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(stdout.String()); got != want {
			t.Errorf("-firewall %s -print-tags: %q, want %q", fw, got, want)
		}
	}
	stdout.Reset()
	if err := run([]string{"-feed", feedDir, "-print-gcflags"}, &stdout, env); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(stdout.String()); got != "all=-l" {
		t.Errorf("-print-gcflags: %q, want all=-l (no inlining: the package's size)", got)
	}
}

// TestPackFeedAPK packs the feed as an .apk for every architecture and reads it back: the
// info fields as package-pack.mk passes them to apk mkpkg, every staged file with its content
// and mode, OpenWrt's files under /lib/apk/packages, the generated scripts.
func TestPackFeedAPK(t *testing.T) {
	env := func(k string) string { return map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}[k] }
	for _, tg := range targets {
		bin := fakeELF(t, tg, elf.ET_EXEC, false)
		out := t.TempDir()
		var stdout bytes.Buffer
		if err := run([]string{"-feed", feedDir, "-format", "apk", "-arch", tg.arch, "-bin", bin, "-out", out}, &stdout, env); err != nil {
			t.Fatalf("%s: %v", tg.arch, err)
		}
		path := filepath.Join(out, "af-conn-0.1.0-r1.apk")
		if strings.TrimSpace(stdout.String()) != path {
			t.Fatalf("printed %q, want %q", stdout.String(), path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := apkv3.Read(data)
		if err != nil {
			t.Fatalf("%s: %v", tg.arch, err)
		}
		info := d.Info
		if info.Name != "af-conn" || info.Version != "0.1.0-r1" || info.Arch != tg.arch || info.License != "Apache-2.0" ||
			info.Origin != "feeds/afconn/af-conn" || info.URL != "https://github.com/afero/af-conn" ||
			info.Maintainer != "af-conn developers" || !strings.HasPrefix(info.Description, "connmgr keeps an IoT hub connected to its cloud: it watches the Ethernet, Wi-Fi station and") ||
			strings.ContainsAny(info.Description, "\n\t") || strings.Contains(info.Description, "  ") ||
			!reflect.DeepEqual(info.Depends, []string{"kmod-nf-conntrack-netlink", "kmod-nft-queue", "libc"}) ||
			!reflect.DeepEqual(info.Provides, []string{"af-conn-any"}) || !d.UniqueIDMatches {
			t.Errorf("%s: info %+v", tg.arch, info)
		}
		if !reflect.DeepEqual(d.Scripts, apkv3.OpenWrtScripts("af-conn")) {
			t.Errorf("%s: scripts %q", tg.arch, d.Scripts)
		}
		var list []string
		for p, w := range wantFiles(t, bin) {
			f, ok := d.File(p)
			if !ok || f.Mode != w.mode || !bytes.Equal(f.Data, w.data) || f.User != "root" || f.MTime != 1700000000 {
				t.Errorf("%s: %s: %+v (found %v)", tg.arch, p, f, ok)
			}
		}
		for _, dir := range d.Dirs {
			if dir.Mode != 0o755 {
				t.Errorf("%s: directory %q mode %o", tg.arch, dir.Name, dir.Mode)
			}
			for _, f := range dir.Files {
				if !strings.HasPrefix(dir.Name, "lib/apk/packages") {
					list = append(list, "/"+dir.Name+"/"+f.Name)
				}
			}
		}
		sort.Strings(list)
		if f, _ := d.File("/lib/apk/packages/af-conn.list"); string(f.Data) != strings.Join(list, "\n")+"\n" || len(list) < 10 {
			t.Errorf("%s: af-conn.list %q, want %q", tg.arch, f.Data, list)
		}
		if f, _ := d.File("/lib/apk/packages/af-conn.conffiles"); string(f.Data) != "/etc/config/connmgr\n/etc/af-conn/whitelist\n" {
			t.Errorf("%s: af-conn.conffiles %q", tg.arch, f.Data)
		}
		cfg, _ := d.File("/etc/config/connmgr")
		if f, _ := d.File("/lib/apk/packages/af-conn.conffiles_static"); !strings.HasPrefix(string(f.Data), fmt.Sprintf("/etc/config/connmgr %x\n/etc/af-conn/whitelist ", cfg.Hash)) {
			t.Errorf("%s: af-conn.conffiles_static %q", tg.arch, f.Data)
		}
	}

	// fw3 dependencies, the dev whitelist, the same bytes twice, the apk version rule.
	tg := targets[0]
	bin := fakeELF(t, tg, elf.ET_EXEC, false)
	out := t.TempDir()
	args := []string{"-feed", feedDir, "-format", "apk", "-arch", tg.arch, "-bin", bin, "-out", out,
		"-firewall", "fw3", "-config", "CONFIG_AF_CONN_WHITELIST_DEV=y"}
	var first []byte
	for i := 0; i < 2; i++ {
		var stdout bytes.Buffer
		if err := run(args, &stdout, env); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(strings.TrimSpace(stdout.String()))
		if i == 1 && !bytes.Equal(first, data) {
			t.Error("packing twice gave different bytes")
		}
		first = data
	}
	d, err := apkv3.Read(first)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"iptables", "iptables-mod-nfqueue", "kmod-ipt-ipset", "kmod-ipt-nfqueue", "kmod-nf-conntrack-netlink", "libc"}; !reflect.DeepEqual(d.Info.Depends, want) {
		t.Errorf("fw3 depends %q", d.Info.Depends)
	}
	dev, _ := os.ReadFile(filepath.Join(filesDir, "etc", "af-conn", "whitelist.dev"))
	if f, _ := d.File("/etc/af-conn/whitelist"); !bytes.Equal(f.Data, dev) {
		t.Error("-config CONFIG_AF_CONN_WHITELIST_DEV=y did not install whitelist.dev")
	}
	if err := run(append(args, "-version", "0.1.0-1"), io.Discard, env); err == nil || !strings.Contains(err.Error(), "apk version") {
		t.Errorf("-version 0.1.0-1 (an ipk version) for an apk: %v", err)
	}
	if err := run([]string{"-feed", feedDir, "-format", "deb"}, io.Discard, env); err == nil {
		t.Error("-format deb accepted")
	}
	var stdout bytes.Buffer
	if err := run([]string{"-feed", feedDir, "-format", "apk", "-print-version"}, &stdout, env); err != nil || stdout.String() != "0.1.0-r1\n" {
		t.Errorf("apk -print-version: %q, %v", stdout.String(), err)
	}
}
