package ipk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func testPackage() *Package {
	return &Package{
		Control: Control{
			Package:         "af-conn",
			Version:         "0.1.0-1",
			Depends:         []string{"libc", "kmod-nf-conntrack-netlink"},
			Source:          "feeds/afconn/af-conn",
			SourceName:      "af-conn",
			License:         "Apache-2.0",
			Section:         "net",
			SourceDateEpoch: 1700000000,
			Maintainer:      "af-conn developers",
			Architecture:    "mipsel_24kc",
			Description:     "  first line\n\tsecond line",
		},
		Conffiles: []string{"/etc/config/connmgr", "/etc/af-conn/whitelist"},
		Files: []File{
			{Path: "/usr/sbin/connmgr", Mode: 0o755, Data: bytes.Repeat([]byte{0x7f, 'E', 'L', 'F'}, 300)},
			{Path: "/etc/config", Mode: fs.ModeDir | 0o755},
			{Path: "/etc/config/connmgr", Mode: 0o600, Data: []byte("config connmgr 'main'\n")},
			{Path: "/etc/af-conn/whitelist", Mode: 0o600, Data: []byte("*.afero.io\n")},
			{Path: "/etc/init.d/connmgr", Mode: 0o755, Data: []byte("#!/bin/sh /etc/rc.common\n")},
			{Path: "/etc/hotplug.d/iface/50-connmgr", Mode: 0o644, Data: []byte("#!/bin/sh\n")},
			{Path: "/usr/lib/af-conn/switch_route.sh", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
			// an empty file, and a directory name sorting around a file name
			{Path: "/usr/lib/af-conn-empty", Mode: 0o644},
		},
	}
}

type entry struct {
	name string
	mode int64
	typ  byte
	data []byte
}

// untar reads a gzip'd tar, checking what every entry of an OpenWrt package has in common.
func untar(t *testing.T, gz []byte, epoch int64) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() || zr.OS != 3 {
		t.Errorf("gzip header: name %q time %v OS %d, want no name, no time, OS 3", zr.Name, zr.ModTime, zr.OS)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	if len(raw)%recordSize != 0 {
		t.Errorf("tar of %d bytes: not whole %d-byte records", len(raw), recordSize)
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	var out []entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		if h.Format != tar.FormatGNU {
			t.Errorf("%s: format %v, want GNU", h.Name, h.Format)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want 0:0 without names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if h.ModTime.Unix() != epoch {
			t.Errorf("%s: time %d, want %d", h.Name, h.ModTime.Unix(), epoch)
		}
		data, _ := io.ReadAll(tr)
		out = append(out, entry{h.Name, h.Mode, h.Typeflag, data})
	}
}

func names(es []entry) []string {
	var n []string
	for _, e := range es {
		n = append(n, e.name)
	}
	return n
}

func find(t *testing.T, es []entry, name string) entry {
	t.Helper()
	for _, e := range es {
		if e.name == name {
			return e
		}
	}
	t.Fatalf("no %s in %v", name, names(es))
	return entry{}
}

func TestWriteStructure(t *testing.T) {
	p := testPackage()
	var b bytes.Buffer
	if err := Write(&b, p); err != nil {
		t.Fatal(err)
	}
	outer := untar(t, b.Bytes(), 1700000000)
	if got, want := strings.Join(names(outer), " "), "./debian-binary ./data.tar.gz ./control.tar.gz"; got != want {
		t.Fatalf("outer entries %q, want %q", got, want)
	}
	if string(outer[0].data) != "2.0\n" {
		t.Errorf("debian-binary %q", outer[0].data)
	}
	for _, e := range outer {
		if e.mode != 0o644 || e.typ != tar.TypeReg {
			t.Errorf("outer %s: mode %o type %c", e.name, e.mode, e.typ)
		}
	}

	data := untar(t, outer[1].data, 1700000000)
	wantData := []string{"./", "./etc/", "./etc/af-conn/", "./etc/af-conn/whitelist", "./etc/config/",
		"./etc/config/connmgr", "./etc/hotplug.d/", "./etc/hotplug.d/iface/", "./etc/hotplug.d/iface/50-connmgr",
		"./etc/init.d/", "./etc/init.d/connmgr", "./usr/", "./usr/lib/", "./usr/lib/af-conn/",
		"./usr/lib/af-conn/switch_route.sh", "./usr/lib/af-conn-empty", "./usr/sbin/", "./usr/sbin/connmgr"}
	if got := strings.Join(names(data), " "); got != strings.Join(wantData, " ") {
		t.Errorf("data entries\n got %s\nwant %s", got, strings.Join(wantData, " "))
	}
	for _, f := range p.Files {
		e := find(t, data, "."+f.Path+map[bool]string{true: "/"}[f.Mode.IsDir()])
		if e.mode != int64(f.Mode.Perm()) || !bytes.Equal(e.data, f.Data) {
			t.Errorf("%s: mode %o, %d bytes; want %o, %d bytes", f.Path, e.mode, len(e.data), f.Mode.Perm(), len(f.Data))
		}
	}
	for _, e := range data {
		if strings.HasSuffix(e.name, "/") && (e.typ != tar.TypeDir || e.mode != 0o755) {
			t.Errorf("%s: type %c mode %o, want a 0755 directory", e.name, e.typ, e.mode)
		}
	}

	ctl := untar(t, outer[2].data, 1700000000)
	if got, want := strings.Join(names(ctl), " "), "./ ./conffiles ./control ./postinst ./prerm"; got != want {
		t.Fatalf("control entries %q, want %q", got, want)
	}
	if e := find(t, ctl, "./conffiles"); string(e.data) != "/etc/af-conn/whitelist\n/etc/config/connmgr\n" || e.mode != 0o644 {
		t.Errorf("conffiles %q mode %o", e.data, e.mode)
	}
	if e := find(t, ctl, "./postinst"); string(e.data) != Postinst || e.mode != 0o755 {
		t.Errorf("postinst %q mode %o", e.data, e.mode)
	}
	if e := find(t, ctl, "./prerm"); string(e.data) != Prerm || e.mode != 0o755 {
		t.Errorf("prerm %q mode %o", e.data, e.mode)
	}
	zr, _ := gzip.NewReader(bytes.NewReader(outer[1].data))
	dataTar, _ := io.ReadAll(zr)
	wantControl := "Package: af-conn\n" +
		"Version: 0.1.0-1\n" +
		"Depends: libc, kmod-nf-conntrack-netlink\n" +
		"Source: feeds/afconn/af-conn\n" +
		"SourceName: af-conn\n" +
		"License: Apache-2.0\n" +
		"Section: net\n" +
		"SourceDateEpoch: 1700000000\n" +
		"Maintainer: af-conn developers\n" +
		"Architecture: mipsel_24kc\n" +
		"Installed-Size: " + strconv.Itoa(len(dataTar)) + "\n" +
		"Description:  first line\n second line\n"
	if e := find(t, ctl, "./control"); string(e.data) != wantControl || e.mode != 0o644 {
		t.Errorf("control mode %o\n%s\nwant\n%s", e.mode, e.data, wantControl)
	}
}

func TestWriteDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	p := testPackage()
	if err := Write(&a, p); err != nil {
		t.Fatal(err)
	}
	// The order files are listed in does not matter.
	q := testPackage()
	for i, j := 0, len(q.Files)-1; i < j; i, j = i+1, j-1 {
		q.Files[i], q.Files[j] = q.Files[j], q.Files[i]
	}
	q.Conffiles[0], q.Conffiles[1] = q.Conffiles[1], q.Conffiles[0]
	if err := Write(&b, q); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("same package, different bytes")
	}
	q.Control.SourceDateEpoch++
	b.Reset()
	if err := Write(&b, q); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("another SOURCE_DATE_EPOCH, same bytes")
	}
}

func TestWriteRejects(t *testing.T) {
	for name, change := range map[string]func(*Package){
		"bad name":          func(p *Package) { p.Control.Package = "af conn" },
		"no version":        func(p *Package) { p.Control.Version = "" },
		"no architecture":   func(p *Package) { p.Control.Architecture = "" },
		"two-line field":    func(p *Package) { p.Control.License = "a\nb" },
		"bad dependency":    func(p *Package) { p.Control.Depends = []string{"a, b"} },
		"missing conffile":  func(p *Package) { p.Conffiles = append(p.Conffiles, "/etc/config/nope") },
		"conffile dir":      func(p *Package) { p.Conffiles = []string{"/etc/config"} },
		"relative path":     func(p *Package) { p.Files[0].Path = "usr/sbin/connmgr" },
		"unclean path":      func(p *Package) { p.Files[0].Path = "/usr//sbin/connmgr" },
		"root":              func(p *Package) { p.Files[0].Path = "/" },
		"twice":             func(p *Package) { p.Files = append(p.Files, p.Files[0]) },
		"under a file":      func(p *Package) { p.Files = append(p.Files, File{Path: "/usr/sbin/connmgr/x", Mode: 0o644}) },
		"symlink":           func(p *Package) { p.Files[0].Mode |= fs.ModeSymlink },
		"directory data":    func(p *Package) { p.Files[1].Data = []byte("x") },
		"long name":         func(p *Package) { p.Files[0].Path = "/" + strings.Repeat("a", 120) },
		"negative epoch":    func(p *Package) { p.Control.SourceDateEpoch = -1 },
		"version with path": func(p *Package) { p.Control.Version = "1/2" },
	} {
		p := testPackage()
		change(p)
		if err := Write(io.Discard, p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFileName(t *testing.T) {
	for v, want := range map[string]string{
		"0.1.0-1":   "af-conn_0.1.0-1_x86_64.ipk",
		"2:0.1.0-1": "af-conn_0.1.0-1_x86_64.ipk",
	} {
		if got := FileName(Control{Package: "af-conn", Version: v, Architecture: "x86_64"}); got != want {
			t.Errorf("version %s: %s, want %s", v, got, want)
		}
	}
}

// TestSameBytesAsGNUTar checks the three tar archives against GNU tar run with ipkg-build's
// options (--owner/--group 0 stand in for fakeroot) on the same tree: they must be identical.
func TestSameBytesAsGNUTar(t *testing.T) {
	out, err := exec.Command("tar", "--version").Output()
	if err != nil || !strings.Contains(string(out), "GNU tar") {
		t.Skip("GNU tar is not installed")
	}
	p := testPackage()
	a, err := p.archives()
	if err != nil {
		t.Fatal(err)
	}
	epoch := "@1700000000"
	gnutar := func(dir string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("tar", append([]string{"--format=gnu", "--numeric-owner", "--owner=0", "--group=0",
			"--sort=name", "--mtime=" + epoch}, args...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tar %v: %v", args, err)
		}
		return out
	}
	write := func(dir, name string, mode fs.FileMode, data []byte) {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if mode.IsDir() {
			if err := os.MkdirAll(f, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode.Perm()); err != nil {
			t.Fatal(err)
		}
	}

	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Files {
		write(root, f.Path, f.Mode, f.Data)
	}
	if got := gnutar(root, "-cpf", "-", "."); !bytes.Equal(a.data, got) {
		t.Errorf("data.tar: %d bytes, GNU tar %d bytes, not the same", len(a.data), len(got))
	}

	ctl := t.TempDir()
	if err := os.Chmod(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(a.control))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		data, _ := io.ReadAll(tr)
		if h.Name != "./" {
			write(ctl, h.Name, fs.FileMode(h.Mode), data)
		}
	}
	if got := gnutar(ctl, "-cf", "-", "."); !bytes.Equal(a.control, got) {
		t.Errorf("control.tar: %d bytes, GNU tar %d bytes, not the same", len(a.control), len(got))
	}

	outer := t.TempDir()
	tr = tar.NewReader(bytes.NewReader(a.outer))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		data, _ := io.ReadAll(tr)
		write(outer, h.Name, fs.FileMode(h.Mode), data)
	}
	if got := gnutar(outer, "-cf", "-", "./debian-binary", "./data.tar.gz", "./control.tar.gz"); !bytes.Equal(a.outer, got) {
		t.Errorf("outer tar: %d bytes, GNU tar %d bytes, not the same", len(a.outer), len(got))
	}
}
