package apkv3

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Decoded is a package as Read found it.
type Decoded struct {
	Info          Info
	InstalledSize uint64
	// UniqueID is info "hashes"; UniqueIDMatches says whether it is what mkpkg computes:
	// the first 20 bytes of the ADB block's sha256 taken with the id itself zeroed.
	UniqueID        []byte
	UniqueIDMatches bool
	Dirs            []DecodedDir
	Scripts         map[string]string
	ADB             []byte // the ADB block's payload
	Signed          bool   // the file has a SIG block
}

// DecodedDir is one entry of the package's paths.
type DecodedDir struct {
	Name        string // relative to the root; "" is the root
	Mode        uint32
	User, Group string
	Files       []DecodedFile
}

// DecodedFile is one file of a directory, with its content from the DATA blocks.
type DecodedFile struct {
	Name        string
	Mode        uint32
	User, Group string
	Size, MTime uint64
	Hash        []byte // sha256 of the content
	Target      []byte // symlink, device or hard link target (af-conn has none)
	Data        []byte
}

// DefaultMaxSize bounds the uncompressed package Read accepts.
const DefaultMaxSize = 256 << 20

// Read parses an .apk (compressed "ADBd" or "ADBc" with deflate, or plain "ADB.") of at most
// DefaultMaxSize bytes uncompressed; see ReadLimit.
func Read(data []byte) (*Decoded, error) { return ReadLimit(data, DefaultMaxSize) }

// ReadLimit parses an .apk whose uncompressed form is at most max bytes and checks it: the
// blocks in apk's order (ADB, SIG..., DATA...) within the file, every value within the ADB
// block, clean unique names, and every regular file's content present once, of its size and
// sha256. Errors name the block, path or field at fault.
func ReadLimit(data []byte, max int64) (*Decoded, error) {
	body, err := decompress(data, max)
	if err != nil {
		return nil, err
	}
	if len(body) < 8 || string(body[:4]) != "ADB." {
		return nil, errors.New("not an ADB file: no \"ADB.\" header")
	}
	if s := binary.LittleEndian.Uint32(body[4:8]); s != schemaPackage {
		return nil, fmt.Errorf("ADB schema %#x, want a package (%#x, \"pckg\")", s, schemaPackage)
	}
	d := &Decoded{Scripts: map[string]string{}}
	type dataRef struct{ dir, file int }
	seen := map[dataRef]bool{}
	var files [][]*DecodedFile
	dataStarted := false
	pos, n := 8, 0
	for pos < len(body) {
		n++
		typ, payload, next, err := nextBlock(body, pos)
		if err != nil {
			return nil, fmt.Errorf("block %d at %d: %w", n, pos, err)
		}
		switch {
		case n == 1 && typ != blockADB:
			return nil, fmt.Errorf("block 1: type %d, want the ADB block first", typ)
		case typ == blockADB && n == 1:
			d.ADB = payload
			if files, err = d.decodeADB(); err != nil {
				return nil, fmt.Errorf("ADB block: %w", err)
			}
		case typ == blockSig && n > 1 && !dataStarted:
			d.Signed = true
		case typ == blockData && n > 1:
			dataStarted = true
			if len(payload) < 8 {
				return nil, fmt.Errorf("DATA block %d: %d bytes, shorter than its header", n, len(payload))
			}
			ref := dataRef{int(binary.LittleEndian.Uint32(payload)), int(binary.LittleEndian.Uint32(payload[4:]))}
			if ref.dir < 1 || ref.dir > len(files) || ref.file < 1 || ref.file > len(files[ref.dir-1]) {
				return nil, fmt.Errorf("DATA block %d: path %d file %d is not in the package", n, ref.dir, ref.file)
			}
			f := files[ref.dir-1][ref.file-1]
			where := path.Join("/", d.Dirs[ref.dir-1].Name, f.Name)
			if seen[ref] {
				return nil, fmt.Errorf("DATA block %d: %s has a second DATA block", n, where)
			}
			seen[ref] = true
			f.Data = payload[8:]
			if uint64(len(f.Data)) != f.Size {
				return nil, fmt.Errorf("DATA block %d: %s: %d bytes, the package says %d", n, where, len(f.Data), f.Size)
			}
			if sum := sha256.Sum256(f.Data); !bytes.Equal(sum[:], f.Hash) {
				return nil, fmt.Errorf("DATA block %d: %s: sha256 %x, the package says %x", n, where, sum, f.Hash)
			}
		default:
			return nil, fmt.Errorf("block %d: type %d not allowed here (ADB, then SIG, then DATA)", n, typ)
		}
		pos = next
	}
	if d.ADB == nil {
		return nil, errors.New("no ADB block")
	}
	for i, dir := range files {
		for j, f := range dir {
			if f.Size > 0 && f.Target == nil && !seen[dataRef{i + 1, j + 1}] {
				return nil, fmt.Errorf("%s: %d bytes but no DATA block", path.Join("/", d.Dirs[i].Name, f.Name), f.Size)
			}
		}
	}
	return d, nil
}

func decompress(data []byte, max int64) ([]byte, error) {
	if len(data) < 4 || string(data[:3]) != "ADB" {
		return nil, errors.New("not an apk v3 package: no \"ADB\" magic (a v2 package is a gzip stream)")
	}
	var r io.Reader
	switch data[3] {
	case '.':
		if int64(len(data)) > max {
			return nil, fmt.Errorf("package of %d bytes is over the limit of %d", len(data), max)
		}
		return data, nil
	case 'd':
		r = flate.NewReader(bytes.NewReader(data[4:]))
	case 'c':
		if len(data) < 6 {
			return nil, errors.New("ADBc: compression spec cut short")
		}
		if data[4] != 1 {
			return nil, fmt.Errorf("ADBc: compression %d, only deflate (1) is supported", data[4])
		}
		r = flate.NewReader(bytes.NewReader(data[6:]))
	default:
		return nil, fmt.Errorf("ADB%c: unknown compression mark", data[3])
	}
	body, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("package over the limit of %d bytes uncompressed", max)
	}
	return body, nil
}

// nextBlock reads the block at pos: its type, payload and where the next one starts.
func nextBlock(b []byte, pos int) (typ uint32, payload []byte, next int, err error) {
	if len(b)-pos < 4 {
		return 0, nil, 0, errors.New("block header cut short")
	}
	ts := binary.LittleEndian.Uint32(b[pos:])
	typ, hdr, raw := ts>>30, uint64(4), uint64(ts&0x3fffffff)
	if typ == blockExt {
		if len(b)-pos < 16 {
			return 0, nil, 0, errors.New("extended block header cut short")
		}
		typ, hdr, raw = ts&0x3fffffff, 16, binary.LittleEndian.Uint64(b[pos+8:])
	}
	if raw < hdr {
		return 0, nil, 0, fmt.Errorf("block size %d smaller than its header", raw)
	}
	padded := (raw + 7) &^ 7
	if padded < raw || padded > uint64(len(b)-pos) {
		return 0, nil, 0, fmt.Errorf("block of %d bytes runs past the end of the file", raw)
	}
	return typ, b[pos+int(hdr) : pos+int(raw)], pos + int(padded), nil
}

// adbReader reads values of an ADB block with every offset checked. Values may be shared
// (mkpkg shares identical ones), so a small block can name the same large array or string
// from many places; budget bounds the bytes read in all, so that decoding takes time and
// memory in proportion to the block, not to the product of its references.
type adbReader struct {
	b      []byte
	budget uint64
}

// readBudget is how many times its size an ADB block may be read over: mkpkg's packages
// share little (acls, the owner names, identical contents), and read about twice over.
const readBudget = 8

func newADBReader(b []byte) *adbReader {
	return &adbReader{b: b, budget: readBudget*uint64(len(b)) + 4096}
}

func (r *adbReader) deref(v uint32, off, size uint64) ([]byte, error) {
	start := uint64(v&valueMask) + off
	if start+size > uint64(len(r.b)) {
		return nil, fmt.Errorf("value %#08x: %d bytes at %d run past the ADB block (%d bytes)", v, size, start, len(r.b))
	}
	if size > r.budget {
		return nil, fmt.Errorf("value %#08x: shared values read over %d times the ADB block's %d bytes", v, readBudget, len(r.b))
	}
	r.budget -= size
	return r.b[start : start+size], nil
}

func (r *adbReader) int(v uint32) (uint64, error) {
	switch v & typeMask {
	case typeSpecial:
		if v == null {
			return 0, nil
		}
	case typeInt:
		return uint64(v & valueMask), nil
	case typeInt32:
		b, err := r.deref(v, 0, 4)
		if err != nil {
			return 0, err
		}
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case typeInt64:
		b, err := r.deref(v, 0, 8)
		if err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(b), nil
	}
	return 0, fmt.Errorf("value %#08x is not a number", v)
}

// blob returns nil for null.
func (r *adbReader) blob(v uint32) ([]byte, error) {
	var lenSize uint64
	switch v & typeMask {
	case typeSpecial:
		if v == null {
			return nil, nil
		}
	case typeBlob8:
		lenSize = 1
	case typeBlob16:
		lenSize = 2
	case typeBlob32:
		lenSize = 4
	}
	if lenSize == 0 {
		return nil, fmt.Errorf("value %#08x is not a blob", v)
	}
	lb, err := r.deref(v, 0, lenSize)
	if err != nil {
		return nil, err
	}
	var n uint64
	for i := int(lenSize) - 1; i >= 0; i-- {
		n = n<<8 | uint64(lb[i])
	}
	return r.deref(v, lenSize, n)
}

// object returns the slots of an object or array (index 0 is the count); nil for null.
func (r *adbReader) object(v uint32) ([]uint32, error) {
	if v == null {
		return nil, nil
	}
	if t := v & typeMask; t != typeObject && t != typeArray {
		return nil, fmt.Errorf("value %#08x is not an object or array", v)
	}
	nb, err := r.deref(v, 0, 4)
	if err != nil {
		return nil, err
	}
	n := uint64(binary.LittleEndian.Uint32(nb))
	if n == 0 {
		return nil, fmt.Errorf("value %#08x: object with no count", v)
	}
	b, err := r.deref(v, 0, 4*n)
	if err != nil {
		return nil, err
	}
	slots := make([]uint32, n)
	for i := range slots {
		slots[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return slots, nil
}

func slot(s []uint32, i int) uint32 {
	if i < len(s) {
		return s[i]
	}
	return null
}

func (r *adbReader) str(s []uint32, i int) (string, error) {
	b, err := r.blob(slot(s, i))
	return string(b), err
}

func (d *Decoded) decodeADB() ([][]*DecodedFile, error) {
	if len(d.ADB) < adbHdrSize {
		return nil, fmt.Errorf("%d bytes, shorter than its header", len(d.ADB))
	}
	if d.ADB[0] != 0 {
		return nil, fmt.Errorf("compatibility version %d, want 0", d.ADB[0])
	}
	r := newADBReader(d.ADB)
	pkg, err := r.object(binary.LittleEndian.Uint32(d.ADB[4:8]))
	if err != nil || pkg == nil {
		return nil, fmt.Errorf("root: %v", orNull(err))
	}
	info, err := r.object(slot(pkg, pkgInfo))
	if err != nil || info == nil {
		return nil, fmt.Errorf("info: %v", orNull(err))
	}
	if err := d.decodeInfo(r, info); err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	scripts, err := r.object(slot(pkg, pkgScripts))
	if err != nil {
		return nil, fmt.Errorf("scripts: %w", err)
	}
	for i, name := range ScriptNames {
		s, err := r.str(scripts, i+1)
		if err != nil {
			return nil, fmt.Errorf("scripts: %s: %w", name, err)
		}
		if s != "" {
			d.Scripts[name] = s
		}
	}
	paths, err := r.object(slot(pkg, pkgPaths))
	if err != nil {
		return nil, fmt.Errorf("paths: %w", err)
	}
	dirNames := map[string]bool{}
	for i := 1; i < len(paths); i++ {
		dir, err := decodeDir(r, paths[i])
		if err != nil {
			return nil, fmt.Errorf("paths[%d]: %w", i, err)
		}
		if dirNames[dir.Name] {
			return nil, fmt.Errorf("paths[%d]: directory %q listed twice", i, dir.Name)
		}
		dirNames[dir.Name] = true
		d.Dirs = append(d.Dirs, dir)
	}
	// The DATA blocks fill in the files in place.
	files := make([][]*DecodedFile, len(d.Dirs))
	for i := range d.Dirs {
		for j := range d.Dirs[i].Files {
			files[i] = append(files[i], &d.Dirs[i].Files[j])
		}
	}
	return files, nil
}

func orNull(err error) error {
	if err == nil {
		return errors.New("missing")
	}
	return err
}

func (d *Decoded) decodeInfo(r *adbReader, info []uint32) error {
	for _, f := range []struct {
		dst   *string
		field int
		name  string
	}{
		{&d.Info.Name, piName, "name"}, {&d.Info.Version, piVersion, "version"},
		{&d.Info.Description, piDescription, "description"}, {&d.Info.Arch, piArch, "arch"},
		{&d.Info.License, piLicense, "license"}, {&d.Info.Origin, piOrigin, "origin"},
		{&d.Info.Maintainer, piMaintainer, "maintainer"}, {&d.Info.URL, piURL, "url"},
	} {
		s, err := r.str(info, f.field)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = s
	}
	if !validName(d.Info.Name) {
		return fmt.Errorf("name %q is not a package name", d.Info.Name)
	}
	if !ValidVersion(d.Info.Version) {
		return fmt.Errorf("version %q is not an apk version", d.Info.Version)
	}
	var err error
	if d.InstalledSize, err = r.int(slot(info, piInstalledSize)); err != nil {
		return fmt.Errorf("installed-size: %w", err)
	}
	if d.UniqueID, err = r.blob(slot(info, piHashes)); err != nil {
		return fmt.Errorf("hashes: %w", err)
	}
	if len(d.UniqueID) == uniqueIDLen {
		// The id's bytes follow its length field, which is 1, 2 or 4 bytes by the blob type.
		v := slot(info, piHashes)
		at := int(v&valueMask) + map[uint32]int{typeBlob8: 1, typeBlob16: 2, typeBlob32: 4}[v&typeMask]
		zeroed := append([]byte(nil), d.ADB...)
		copy(zeroed[at:at+uniqueIDLen], make([]byte, uniqueIDLen))
		sum := sha256.Sum256(zeroed)
		d.UniqueIDMatches = bytes.Equal(sum[:uniqueIDLen], d.UniqueID)
	}
	for _, l := range []struct {
		dst   *[]string
		field int
		name  string
	}{{&d.Info.Depends, piDepends, "depends"}, {&d.Info.Provides, piProvides, "provides"}} {
		deps, err := r.object(slot(info, l.field))
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		for i := 1; i < len(deps); i++ {
			dep, err := r.object(deps[i])
			if err != nil || dep == nil {
				return fmt.Errorf("%s[%d]: %v", l.name, i, orNull(err))
			}
			name, err := r.str(dep, depName)
			if err != nil {
				return fmt.Errorf("%s[%d]: %w", l.name, i, err)
			}
			if len(dep) > depName+1 {
				return fmt.Errorf("%s[%d] %s: versioned dependencies are not read", l.name, i, name)
			}
			*l.dst = append(*l.dst, name)
		}
	}
	return nil
}

func decodeACL(r *adbReader, v uint32) (mode uint32, user, group string, err error) {
	acl, err := r.object(v)
	if err != nil || acl == nil {
		return 0, "", "", fmt.Errorf("acl: %v", orNull(err))
	}
	m, err := r.int(slot(acl, aclMode))
	if err != nil || m > 0o7777 {
		return 0, "", "", fmt.Errorf("acl mode %o: %v", m, err)
	}
	if user, err = r.str(acl, aclUser); err != nil {
		return 0, "", "", fmt.Errorf("acl user: %w", err)
	}
	if group, err = r.str(acl, aclGroup); err != nil {
		return 0, "", "", fmt.Errorf("acl group: %w", err)
	}
	return uint32(m), user, group, nil
}

func decodeDir(r *adbReader, v uint32) (DecodedDir, error) {
	var dir DecodedDir
	di, err := r.object(v)
	if err != nil || di == nil {
		return dir, orNull(err)
	}
	if dir.Name, err = r.str(di, diName); err != nil {
		return dir, fmt.Errorf("name: %w", err)
	}
	if dir.Name != "" && (path.Clean(dir.Name) != dir.Name || path.IsAbs(dir.Name) || dir.Name == ".." || strings.HasPrefix(dir.Name, "../")) {
		return dir, fmt.Errorf("directory %q: not a clean relative path", dir.Name)
	}
	if dir.Mode, dir.User, dir.Group, err = decodeACL(r, slot(di, diACL)); err != nil {
		return dir, fmt.Errorf("%q: %w", dir.Name, err)
	}
	fis, err := r.object(slot(di, diFiles))
	if err != nil {
		return dir, fmt.Errorf("%q: files: %w", dir.Name, err)
	}
	names := map[string]bool{}
	for j := 1; j < len(fis); j++ {
		fi, err := r.object(fis[j])
		if err != nil || fi == nil {
			return dir, fmt.Errorf("%q: files[%d]: %v", dir.Name, j, orNull(err))
		}
		f := DecodedFile{}
		if f.Name, err = r.str(fi, fiName); err != nil {
			return dir, fmt.Errorf("%q: files[%d]: name: %w", dir.Name, j, err)
		}
		where := path.Join("/", dir.Name, f.Name)
		if f.Name == "" || f.Name == "." || f.Name == ".." || strings.ContainsAny(f.Name, "/\x00") {
			return dir, fmt.Errorf("%q: files[%d]: bad name %q", dir.Name, j, f.Name)
		}
		if names[f.Name] {
			return dir, fmt.Errorf("%s: listed twice", where)
		}
		names[f.Name] = true
		if f.Mode, f.User, f.Group, err = decodeACL(r, slot(fi, fiACL)); err != nil {
			return dir, fmt.Errorf("%s: %w", where, err)
		}
		if f.Size, err = r.int(slot(fi, fiSize)); err != nil {
			return dir, fmt.Errorf("%s: size: %w", where, err)
		}
		if f.MTime, err = r.int(slot(fi, fiMTime)); err != nil {
			return dir, fmt.Errorf("%s: mtime: %w", where, err)
		}
		if f.Hash, err = r.blob(slot(fi, fiHash)); err != nil {
			return dir, fmt.Errorf("%s: hash: %w", where, err)
		}
		if f.Target, err = r.blob(slot(fi, fiTarget)); err != nil {
			return dir, fmt.Errorf("%s: target: %w", where, err)
		}
		if f.Target == nil && len(f.Hash) != sha256.Size {
			return dir, fmt.Errorf("%s: hash of %d bytes, want a sha256", where, len(f.Hash))
		}
		dir.Files = append(dir.Files, f)
	}
	return dir, nil
}

// File returns the decoded file at an absolute path, with its data.
func (d *Decoded) File(p string) (DecodedFile, bool) {
	dirName, name := path.Split(strings.TrimPrefix(p, "/"))
	dirName = strings.TrimSuffix(dirName, "/")
	for _, dir := range d.Dirs {
		if dir.Name != dirName {
			continue
		}
		for _, f := range dir.Files {
			if f.Name == name {
				return f, true
			}
		}
	}
	return DecodedFile{}, false
}
