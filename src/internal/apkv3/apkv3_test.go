package apkv3

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/ipk"
)

// demo is the package of testdata/mkpkg-demo.raw, which stock apk-tools 3.0.6 wrote
// (decompressed) for the same tree with
//
//	SOURCE_DATE_EPOCH=1700000000 apk mkpkg --info name:demo --info version:1.2.3-r4
//	  --info description:... --info arch:mipsel_24kc --info license:MIT
//	  --info origin:feeds/x/demo --info url:https://example.com
//	  --info "maintainer:Demo <d@example.com>" --info provides:demo-any
//	  --info "depends:zlib libc zlib" --script post-install:... --script pre-deinstall:...
//	  --files t --output demo.apk
//
// run as root on a tree made with umask 022: an empty directory with mode 2750, a file in
// the root, an empty file, a 300-byte program, a 0600 configuration file.
func demo() *Package {
	return &Package{
		Info: Info{
			Name: "demo", Version: "1.2.3-r4",
			Description: strings.Repeat("A demo package for the apkv3 tests, ", 10),
			Arch:        "mipsel_24kc", License: "MIT", Origin: "feeds/x/demo", URL: "https://example.com",
			Maintainer: "Demo <d@example.com>",
			Depends:    []string{"zlib", "libc", "zlib"},
			Provides:   []string{"demo-any"},
		},
		Scripts: map[string]string{
			"post-install":  "#!/bin/sh\necho installed\n",
			"pre-deinstall": "#!/bin/sh\necho bye\n",
		},
		Files: []ipk.File{
			{Path: "/usr/bin/demo", Mode: 0o755, Data: bytes.Repeat([]byte("b"), 300)},
			{Path: "/etc/config/demo", Mode: 0o600, Data: []byte("config demo\n\toption x 1\n")},
			{Path: "/var/empty", Mode: fs.ModeDir | fs.ModeSetgid | 0o750},
			{Path: "/usr/share/demo/empty", Mode: 0o644},
			{Path: "/README", Mode: 0o644, Data: []byte("top\n")},
		},
		SourceDateEpoch: 1700000000,
	}
}

func inflate(t *testing.T, apk []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(apk, []byte("ADBd")) {
		t.Fatalf("package starts %q, want ADBd", apk[:4])
	}
	b, err := io.ReadAll(flate.NewReader(bytes.NewReader(apk[4:])))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, p *Package) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, p); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestMatchesStockMkpkg: the uncompressed package is byte for byte what apk mkpkg wrote.
func TestMatchesStockMkpkg(t *testing.T) {
	want, err := os.ReadFile("testdata/mkpkg-demo.raw")
	if err != nil {
		t.Fatal(err)
	}
	got := inflate(t, write(t, demo()))
	if !bytes.Equal(got, want) {
		n := 0
		for n < len(got) && n < len(want) && got[n] == want[n] {
			n++
		}
		t.Fatalf("package differs from apk mkpkg's from byte %d (%d bytes, mkpkg %d)", n, len(got), len(want))
	}
}

func TestRoundTrip(t *testing.T) {
	p := demo()
	data := write(t, p)
	d, err := Read(data)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo := p.Info
	wantInfo.Depends = []string{"libc", "zlib"} // sorted, once each, as apk keeps them
	if !reflect.DeepEqual(d.Info, wantInfo) {
		t.Errorf("info %+v\nwant %+v", d.Info, wantInfo)
	}
	if d.InstalledSize != 300+24+4 || !d.UniqueIDMatches || d.Signed {
		t.Errorf("installed size %d, unique id matches %v, signed %v", d.InstalledSize, d.UniqueIDMatches, d.Signed)
	}
	if !reflect.DeepEqual(d.Scripts, p.Scripts) {
		t.Errorf("scripts %q", d.Scripts)
	}
	var dirs []string
	for _, dir := range d.Dirs {
		dirs = append(dirs, dir.Name)
		if dir.User != "root" || dir.Group != "root" {
			t.Errorf("directory %q owned by %s:%s", dir.Name, dir.User, dir.Group)
		}
		if want := map[string]uint32{"var/empty": 0o2750}[dir.Name]; want != 0 && dir.Mode != want || want == 0 && dir.Mode != 0o755 {
			t.Errorf("directory %q mode %o", dir.Name, dir.Mode)
		}
	}
	if want := []string{"", "etc", "etc/config", "usr", "usr/bin", "usr/share", "usr/share/demo", "var", "var/empty"}; !reflect.DeepEqual(dirs, want) {
		t.Errorf("directories %q, want %q", dirs, want)
	}
	for _, f := range p.Files {
		if f.Mode.IsDir() {
			continue
		}
		got, ok := d.File(f.Path)
		sum := sha256.Sum256(f.Data)
		if !ok || !bytes.Equal(got.Data, f.Data) || got.Mode != uint32(f.Mode.Perm()) || got.Size != uint64(len(f.Data)) ||
			got.MTime != 1700000000 || !bytes.Equal(got.Hash, sum[:]) || got.User != "root" {
			t.Errorf("%s: read back as %+v (found %v)", f.Path, got, ok)
		}
	}
}

// TestSameBytes: the same package gives the same bytes, whatever order the files come in;
// another time stamp gives other bytes.
func TestSameBytes(t *testing.T) {
	a := write(t, demo())
	p := demo()
	for i, j := 0, len(p.Files)-1; i < j; i, j = i+1, j-1 {
		p.Files[i], p.Files[j] = p.Files[j], p.Files[i]
	}
	if !bytes.Equal(a, write(t, p)) {
		t.Error("the order of Files changed the package")
	}
	p.SourceDateEpoch++
	if bytes.Equal(a, write(t, p)) {
		t.Error("another SourceDateEpoch gave the same package")
	}
}

func TestWriteRefuses(t *testing.T) {
	for name, change := range map[string]func(p *Package){
		"ipk version":     func(p *Package) { p.Info.Version = "1.2.3-4" },
		"git describe":    func(p *Package) { p.Info.Version = "v0.1.0-3-gabcdef" },
		"bad name":        func(p *Package) { p.Info.Name = "-demo" },
		"no arch":         func(p *Package) { p.Info.Arch = "" },
		"versioned dep":   func(p *Package) { p.Info.Depends = []string{"libc>=1"} },
		"unknown script":  func(p *Package) { p.Scripts["postinst"] = "x" },
		"relative path":   func(p *Package) { p.Files[0].Path = "usr/bin/demo" },
		"twice":           func(p *Package) { p.Files = append(p.Files, p.Files[0]) },
		"file as a dir":   func(p *Package) { p.Files = append(p.Files, ipk.File{Path: "/README/x", Mode: 0o644}) },
		"symlink":         func(p *Package) { p.Files[0].Mode |= fs.ModeSymlink },
		"negative epoch":  func(p *Package) { p.SourceDateEpoch = -1 },
		"dir with data":   func(p *Package) { p.Files[2].Data = []byte("x") },
		"dir over a file": func(p *Package) { p.Files = append(p.Files, ipk.File{Path: "/README", Mode: fs.ModeDir | 0o755}) },
	} {
		p := demo()
		change(p)
		if err := Write(io.Discard, p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"0.1.0-r1": true, "1": true, "1.2.3": true, "1.2a": true, "1.2_rc3": true, "1.2_p1_pre2": true,
		"1.0~abc123-r0": true, "2024.01.02-r10": true, "1.2_git": true,
		"": false, "v1": false, "0.1.0-1": false, "1.2-r": false, "1..2": false, "1.2aa": false,
		"1.2_foo": false, "1-r1-r2": false, "1~": false, "1~XYZ": false, "1.2.": false, "1.2-r1a": false,
	} {
		if ValidVersion(v) != want {
			t.Errorf("ValidVersion(%q) = %v", v, !want)
		}
	}
}

// rebuild deflates a changed uncompressed package.
func rebuild(t *testing.T, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("ADBd")
	zw, _ := flate.NewWriter(&b, 1)
	zw.Write(body)
	zw.Close()
	return b.Bytes()
}

// TestReadRejects: each kind of damage is refused with an error naming it.
func TestReadRejects(t *testing.T) {
	good := inflate(t, write(t, demo()))
	adbLen := int(binary.LittleEndian.Uint32(good[8:]) & 0x3fffffff)
	firstData := 8 + (adbLen+7)&^7
	lastByte := len(good) - 1
	for lastByte > 0 && good[lastByte] == 0 {
		lastByte--
	}
	for name, tc := range map[string]struct {
		damage func(b []byte) []byte
		want   string
	}{
		"content":    {func(b []byte) []byte { b[lastByte] ^= 1; return b }, "sha256"},
		"truncated":  {func(b []byte) []byte { return b[:len(b)-9] }, "past the end"},
		"no data":    {func(b []byte) []byte { return b[:firstData] }, "no DATA block"},
		"data twice": {func(b []byte) []byte { return append(b, b[firstData:firstData+16]...) }, "second DATA block"},
		"schema":     {func(b []byte) []byte { b[4] = 'x'; return b }, "schema"},
		"magic":      {func(b []byte) []byte { b[3] = '!'; return b }, "ADB."},
		"compat":     {func(b []byte) []byte { b[12] = 1; return b }, "compatibility"},
		"root":       {func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 0xe0fffff0); return b }, "run past"},
		"data first": {func(b []byte) []byte { b[11] = 2 << 6; return b }, "ADB block first"},
		"data index": {func(b []byte) []byte { b[firstData+4] = 99; return b }, "not in the package"},
		"sig after data": {func(b []byte) []byte {
			return append(b, 12, 0, 0, 1<<6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		}, "not allowed"},
	} {
		b := tc.damage(append([]byte(nil), good...))
		_, err := Read(rebuild(t, b))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one about %q", name, err, tc.want)
		}
	}
	if _, err := Read([]byte{0x1f, 0x8b, 8, 0}); err == nil || !strings.Contains(err.Error(), "v2") {
		t.Errorf("gzip (apk v2) package: %v", err)
	}
	if _, err := ReadLimit(write(t, demo()), 1000); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("over the size limit: %v", err)
	}
	// Uncompressed and "ADBc" (deflate) packages read as well.
	if _, err := Read(good); err != nil {
		t.Errorf("ADB.: %v", err)
	}
	adbc := append([]byte("ADBc\x01\x09"), rebuild(t, good)[4:]...)
	if _, err := Read(adbc); err != nil {
		t.Errorf("ADBc: %v", err)
	}
}

func TestOpenWrtFiles(t *testing.T) {
	files := []ipk.File{
		{Path: "/usr/sbin/x", Mode: 0o755, Data: []byte("bin")},
		{Path: "/etc/config/x", Mode: 0o600, Data: []byte("cfg")},
		{Path: "/etc/x.d", Mode: fs.ModeDir | 0o755},
		{Path: "/etc/x.d/a", Mode: 0o644, Data: []byte("a")},
	}
	out, err := OpenWrtFiles("x", files, []string{"/etc/x.d/a", "/etc/config/x", "/etc/missing"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range out {
		if strings.HasPrefix(f.Path, OpenWrtPackageDir+"/") && f.Mode.IsRegular() {
			if f.Mode != 0o644 {
				t.Errorf("%s mode %v", f.Path, f.Mode)
			}
			got[f.Path] = string(f.Data)
		}
	}
	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	want := map[string]string{
		"/lib/apk/packages/x.list":             "/etc/config/x\n/etc/x.d/a\n/usr/sbin/x\n",
		"/lib/apk/packages/x.conffiles":        "/etc/x.d/a\n/etc/config/x\n/etc/missing\n",
		"/lib/apk/packages/x.conffiles_static": "/etc/x.d/a " + sum("a") + "\n/etc/config/x " + sum("cfg") + "\n",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OpenWrt files %q\nwant %q", got, want)
	}
	if _, err := OpenWrtFiles("x", append(files, ipk.File{Path: "/lib/apk/packages/x.list", Mode: 0o644}), nil); err == nil {
		t.Error("a package file in /lib/apk/packages was accepted")
	}
	s := OpenWrtScripts("x")
	if !strings.HasPrefix(s["post-upgrade"], "#!/bin/sh\nexport PKG_UPGRADE=1\n[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n") ||
		strings.Count(s["post-upgrade"], "#!") != 1 || !strings.HasSuffix(s["post-upgrade"], strings.TrimPrefix(s["post-install"], "#!/bin/sh\n")) ||
		!strings.Contains(s["pre-deinstall"], "export pkgname=\"x\"\ndefault_prerm\n") || len(s) != 3 {
		t.Errorf("scripts %q", s)
	}
}

// FuzzRead: no input makes Read panic or read out of bounds, and whatever it accepts has
// every file's content matching its hash.
func FuzzRead(f *testing.F) {
	var b bytes.Buffer
	if err := Write(&b, demo()); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	raw, _ := io.ReadAll(flate.NewReader(bytes.NewReader(b.Bytes()[4:])))
	f.Add(raw)
	f.Add([]byte("ADB.pckg"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ReadLimit(data, 1<<20)
		if err != nil {
			return
		}
		for _, dir := range d.Dirs {
			for _, file := range dir.Files {
				if file.Target != nil || file.Size == 0 {
					continue
				}
				if sum := sha256.Sum256(file.Data); !bytes.Equal(sum[:], file.Hash) {
					t.Fatalf("%s/%s accepted with content not matching its hash", dir.Name, file.Name)
				}
			}
		}
	})
}

// sharedBomb is a package whose n directories all share one files array of n empty files:
// legal ADB (mkpkg shares identical values), about 60 bytes per directory, but n*n files.
func sharedBomb(n int) []byte {
	a := newADBWriter()
	info := make([]uint32, piMax)
	info[piName], info[piVersion] = a.str("x"), a.str("1-r0")
	acl, hash := a.acl(0o644), a.blob(make([]byte, sha256.Size))
	files := []uint32{null}
	for j := 0; j < n; j++ {
		fi := make([]uint32, fiMax)
		fi[fiName], fi[fiACL], fi[fiHash] = a.str(strconv.Itoa(j)), acl, hash
		files = append(files, a.object(fi))
	}
	shared := a.object(files)
	paths := []uint32{null}
	for i := 0; i < n; i++ {
		di := make([]uint32, diMax)
		di[diName], di[diACL], di[diFiles] = a.str("d"+strconv.Itoa(i)), acl, shared
		paths = append(paths, a.object(di))
	}
	pkg := make([]uint32, pkgMax)
	pkg[pkgInfo], pkg[pkgPaths] = a.object(info), a.object(paths)
	adb, _ := a.finish(a.object(pkg))
	var b bytes.Buffer
	b.WriteString("ADB.")
	b.Write(binary.LittleEndian.AppendUint32(nil, schemaPackage))
	block(&b, blockADB, adb)
	return b.Bytes()
}

// TestReadSharedValues: a small package that names one large array from many places is
// refused, not decoded into the product of its references (60 KB would be a million
// files, seconds and half a GB); a package sharing as mkpkg shares still reads.
func TestReadSharedValues(t *testing.T) {
	bomb := sharedBomb(1000)
	if _, err := ReadLimit(bomb, 1<<20); err == nil || !strings.Contains(err.Error(), "shared values") {
		t.Errorf("%d-byte package naming one array 1000 times: error %v, want one about shared values", len(bomb), err)
	}
	if _, err := Read(sharedBomb(3)); err != nil {
		t.Errorf("3 directories sharing 3 files: %v", err)
	}
}
