// Package apkv3 writes and reads APK v3 packages (.apk), the format of apk-tools 3 that
// OpenWrt 25.12 installs with `apk add`. Write lays a package out byte for byte as
// `apk mkpkg` (apk-tools 3.0) lays it out for the same files, metadata and scripts, before
// compression: the file is "ADBd" and a raw deflate stream of "ADB." "pckg", one ADB block
// holding the package object (info, paths with every file's size, mtime, sha256 and acl,
// scripts), and one DATA block per non-empty regular file. Only the deflate stream differs
// from apk's, which is zlib's at level 9; apk reads either. The output depends on nothing
// but the Package: every time stamp is SourceDateEpoch, every owner root:root.
//
// Read parses such a file back and checks it (every hash, every size, the blocks' order and
// bounds); it is what the tests and the fuzz target use. The format is described in
// apk-tools' doc/apk-v3.5.scd and src/adb.h, src/apk_adb.h, src/app_mkpkg.c.
package apkv3

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/afero/af-conn/internal/ipk"
)

// Schema and field numbers of apk-tools' src/apk_adb.h.
const (
	schemaPackage = 0x676b6370 // "pckg"

	piName, piVersion, piHashes, piDescription, piArch, piLicense, piOrigin, piMaintainer, piURL = 1, 2, 3, 4, 5, 6, 7, 8, 9
	piInstalledSize, piDepends, piProvides, piMax                                                = 12, 15, 16, 22

	pkgInfo, pkgPaths, pkgScripts, pkgMax = 1, 2, 3, 6
	diName, diACL, diFiles, diMax         = 1, 2, 3, 4
	fiName, fiACL, fiSize, fiMTime        = 1, 2, 3, 4
	fiHash, fiTarget, fiMax               = 5, 6, 7
	aclMode, aclUser, aclGroup, aclMax    = 1, 2, 3, 5
	depName, depMax                       = 1, 4

	blockADB, blockSig, blockData, blockExt = 0, 1, 2, 3

	// uniqueIDLen is how much of the ADB's sha256 mkpkg keeps as the package's unique id
	// (info "hashes"): the length of a SHA-1.
	uniqueIDLen = 20
)

// ScriptNames are the package scripts in apk's order (schema_scripts), "trigger" first.
var ScriptNames = []string{"trigger", "pre-install", "post-install", "pre-deinstall", "post-deinstall", "pre-upgrade", "post-upgrade"}

// Info is the package info as `apk mkpkg --info` takes it. Empty fields are left out.
type Info struct {
	Name, Version, Description, Arch, License, Origin, Maintainer, URL string
	// Depends and Provides are package names, as `--info depends:` would list them.
	Depends, Provides []string
}

// Package is everything an .apk is made of.
type Package struct {
	Info Info
	// Scripts by apk's script name (ScriptNames); empty ones are left out.
	Scripts map[string]string
	// Files are the installed tree: directories and regular files, absolute clean paths;
	// parent directories missing from it are added with mode 0755.
	Files           []ipk.File
	SourceDateEpoch int64
}

// FileName is the name OpenWrt's package-pack.mk gives the package: NAME-VERSION.apk.
func FileName(info Info) string { return info.Name + "-" + info.Version + ".apk" }

// Write writes the package as an .apk to w.
func Write(w io.Writer, p *Package) error {
	body, err := p.body()
	if err != nil {
		return err
	}
	var out bytes.Buffer
	out.WriteString("ADBd")
	zw, err := flate.NewWriter(&out, flate.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(body); err != nil {
		return fmt.Errorf("deflate: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("deflate: %w", err)
	}
	_, err = w.Write(out.Bytes())
	return err
}

// dir is one directory of the package with its regular files, as mkpkg collects them.
type dir struct {
	name  string // relative to the root, "" for the root itself
	mode  fs.FileMode
	files []ipk.File // sorted by name
}

// body is the uncompressed .apk: the file header, the ADB block and the DATA blocks.
func (p *Package) body() ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	dirs, err := tree(p.Files)
	if err != nil {
		return nil, err
	}
	adb, err := p.adb(dirs)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("ADB.")
	b.Write(binary.LittleEndian.AppendUint32(nil, schemaPackage))
	block(&b, blockADB, adb)
	// DATA blocks follow the paths and files in their sorted order, 1-based indexes.
	for i, d := range dirs {
		for j, f := range d.files {
			if len(f.Data) == 0 {
				continue
			}
			hdr := binary.LittleEndian.AppendUint32(nil, uint32(i+1))
			hdr = binary.LittleEndian.AppendUint32(hdr, uint32(j+1))
			block(&b, blockData, append(hdr, f.Data...))
		}
	}
	return b.Bytes(), nil
}

// block appends a block: its type and length in one 32-bit word, the payload, and zero
// padding to 8 bytes (adb_c_block). af-conn's files are far below the 1 GiB that would need
// the extended header.
func block(b *bytes.Buffer, typ uint32, payload []byte) {
	b.Write(binary.LittleEndian.AppendUint32(nil, typ<<30|uint32(4+len(payload))))
	b.Write(payload)
	for b.Len()%8 != 0 {
		b.WriteByte(0)
	}
}

// adb writes the package object with the writes of mkpkg_main in their order: the info
// fields by field number, then each directory (its files first, then itself), the installed
// size and the unique id placeholder, the info, paths and scripts objects, and the root.
// The unique id is then the first 20 bytes of the block's sha256.
func (p *Package) adb(dirs []dir) ([]byte, error) {
	a := newADBWriter()
	info := make([]uint32, piMax)
	for _, f := range []struct {
		field int
		value string
	}{
		{piName, p.Info.Name}, {piVersion, p.Info.Version}, {piDescription, p.Info.Description},
		{piArch, p.Info.Arch}, {piLicense, p.Info.License}, {piOrigin, p.Info.Origin},
		{piMaintainer, p.Info.Maintainer}, {piURL, p.Info.URL},
	} {
		info[f.field] = a.str(f.value)
	}
	info[piDepends] = a.dependencies(p.Info.Depends)
	info[piProvides] = a.dependencies(p.Info.Provides)

	var installed uint64
	paths := make([]uint32, 1, len(dirs)+1)
	for _, d := range dirs {
		files := []uint32{null}
		for _, f := range d.files {
			installed += uint64(len(f.Data))
			fi := make([]uint32, fiMax)
			fi[fiName] = a.str(path.Base(f.Path))
			sum := sha256.Sum256(f.Data)
			fi[fiHash] = a.blob(sum[:])
			fi[fiMTime] = a.int(uint64(p.SourceDateEpoch))
			fi[fiSize] = a.int(uint64(len(f.Data)))
			fi[fiACL] = a.acl(f.Mode)
			files = append(files, a.object(fi))
		}
		di := make([]uint32, diMax)
		di[diName] = a.str(d.name)
		di[diACL] = a.acl(d.mode)
		di[diFiles] = a.object(files)
		paths = append(paths, a.object(di))
	}
	if installed == 0 {
		installed = 1 // mkpkg's mark of a package that has files
	}
	info[piInstalledSize] = a.int(installed)
	info[piHashes] = a.blobRaw(make([]byte, uniqueIDLen))

	pkg := make([]uint32, pkgMax)
	pkg[pkgInfo] = a.object(info)
	pkg[pkgPaths] = a.object(paths)
	scripts := make([]uint32, len(ScriptNames)+1)
	for i, name := range ScriptNames {
		scripts[i+1] = a.str(p.Scripts[name])
	}
	pkg[pkgScripts] = a.object(scripts)
	adb, err := a.finish(a.object(pkg))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(adb)
	idAt := int(info[piHashes]&valueMask) + 1
	copy(adb[idAt:idAt+uniqueIDLen], sum[:uniqueIDLen])
	return adb, nil
}

// acl is a file's or directory's mode and owner; the build runs under fakeroot, so every
// owner is root:root, and no extended attributes.
func (a *adbWriter) acl(mode fs.FileMode) uint32 {
	acl := make([]uint32, aclMax)
	acl[aclMode] = a.int(uint64(unixMode(mode)))
	acl[aclUser] = a.str("root")
	acl[aclGroup] = a.str("root")
	return a.object(acl)
}

// unixMode is the permission bits with setuid, setgid and sticky as stat gives them.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// dependencies writes a dependency list as schema_dependency_array does: each name an
// object of its own, in the order given, then the array sorted by name without repeats.
func (a *adbWriter) dependencies(names []string) uint32 {
	type dep struct {
		name string
		val  uint32
	}
	var deps []dep
	for _, n := range names {
		d := make([]uint32, depMax)
		d[depName] = a.str(n)
		deps = append(deps, dep{n, a.object(d)})
	}
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].name < deps[j].name })
	slots := []uint32{null}
	for i, d := range deps {
		if i > 0 && d.val == deps[i-1].val {
			continue
		}
		slots = append(slots, d.val)
	}
	return a.object(slots)
}

func (p *Package) check() error {
	in := p.Info
	if !validName(in.Name) {
		return fmt.Errorf("package name %q: must start with a letter or digit and hold only letters, digits and _.+-", in.Name)
	}
	if !ValidVersion(in.Version) {
		return fmt.Errorf("version %q is not an apk version (number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}, e.g. 0.1.0-r1)", in.Version)
	}
	if in.Arch == "" {
		return fmt.Errorf("package %s: no architecture", in.Name)
	}
	for _, list := range [][]string{in.Depends, in.Provides} {
		for _, d := range list {
			if !validName(d) {
				return fmt.Errorf("dependency %q: only plain package names are supported", d)
			}
		}
	}
	if p.SourceDateEpoch < 0 {
		return fmt.Errorf("SourceDateEpoch %d: must not be negative", p.SourceDateEpoch)
	}
	for name := range p.Scripts {
		if !scriptName(name) {
			return fmt.Errorf("script %q: not one of %s", name, strings.Join(ScriptNames, ", "))
		}
	}
	return nil
}

func scriptName(s string) bool {
	for _, n := range ScriptNames {
		if n == s {
			return true
		}
	}
	return false
}

// validName is apk's package name rule: [a-zA-Z0-9._+-], starting with a letter or digit.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._+-", rune(c))) {
			return false
		}
	}
	return s != ""
}

// tree groups the files by directory in mkpkg's order: the root, then every directory by
// its path (strcmp order), each with its regular files by name. Directory and file names
// sort byte-wise, which is also the order apk sorts the arrays in, so indexes agree.
func tree(files []ipk.File) ([]dir, error) {
	dirs := map[string]*dir{"": {mode: fs.ModeDir | 0o755}}
	seen := map[string]bool{}
	var ensure func(p string) (*dir, error)
	ensure = func(p string) (*dir, error) {
		if d, ok := dirs[p]; ok {
			return d, nil
		}
		if seen[p] {
			return nil, fmt.Errorf("file /%s: a parent of other files", p)
		}
		if _, err := ensure(parentOf(p)); err != nil {
			return nil, err
		}
		d := &dir{name: p, mode: fs.ModeDir | 0o755}
		dirs[p] = d
		return d, nil
	}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("file %q: path must be absolute and clean", f.Path)
		}
		if f.Mode&^(fs.ModeDir|fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return nil, fmt.Errorf("file %s: mode %v: only directories and regular files", f.Path, f.Mode)
		}
		rel := f.Path[1:]
		if f.Mode.IsDir() {
			if len(f.Data) > 0 {
				return nil, fmt.Errorf("file %s: a directory has no data", f.Path)
			}
			d, err := ensure(rel)
			if err != nil {
				return nil, err
			}
			d.mode = f.Mode // an explicit directory sets the mode of an implied one
			continue
		}
		if seen[rel] {
			return nil, fmt.Errorf("file %s: listed twice", f.Path)
		}
		if _, ok := dirs[rel]; ok {
			return nil, fmt.Errorf("file %s: also a directory", f.Path)
		}
		d, err := ensure(parentOf(rel))
		if err != nil {
			return nil, err
		}
		seen[rel] = true
		d.files = append(d.files, f)
	}
	out := make([]dir, 0, len(dirs))
	for _, d := range dirs {
		sort.Slice(d.files, func(i, j int) bool { return path.Base(d.files[i].Path) < path.Base(d.files[j].Path) })
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func parentOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}
