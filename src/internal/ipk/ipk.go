// Package ipk writes OpenWrt .ipk packages byte for byte the way OpenWrt's build writes them
// (scripts/ipkg-build run under fakeroot, with the control file and maintainer scripts that
// include/package-pack.mk generates), so that stock opkg installs them like any feed package.
//
// An .ipk is a gzip'd GNU tar holding ./debian-binary, ./data.tar.gz and ./control.tar.gz, in
// that order. The inner archives are GNU tars of the installed tree and of the control
// directory: entries sorted by name within each directory, owned by 0:0 with no user or group
// names, every time stamp SOURCE_DATE_EPOCH, padded to whole 10240-byte records; every gzip
// stream has no name and a zero time. The output depends only on the Package given.
package ipk

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Postinst and Prerm are the maintainer scripts OpenWrt generates for every package: they hand
// over to base-files' default_postinst and default_prerm, which enable and start (disable and
// stop) the package's init scripts, run its uci-defaults on a live system, and only enable or
// disable when installing into an image root (IPKG_INSTROOT set).
const (
	Postinst = "#!/bin/sh\n" +
		"[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n" +
		"[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n" +
		". ${IPKG_INSTROOT}/lib/functions.sh\n" +
		"default_postinst $0 $@\n"
	Prerm = "#!/bin/sh\n" +
		"[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n" +
		". ${IPKG_INSTROOT}/lib/functions.sh\n" +
		"default_prerm $0 $@\n"
)

// Control holds the fields of the package's control file that af-conn uses, named as in the
// file. Empty fields are left out, as OpenWrt does.
type Control struct {
	Package         string
	Version         string
	Depends         []string
	Source          string
	SourceName      string
	License         string
	LicenseFiles    string
	Section         string
	SourceDateEpoch int64
	URL             string
	Maintainer      string
	Architecture    string
	// Description is the package's description as written in the Makefile, one or more lines;
	// each line's leading white space becomes one space, as OpenWrt's sed does.
	Description string
}

// File is one entry of the installed tree.
type File struct {
	Path string      // absolute, clean path on the target, e.g. /etc/config/connmgr
	Mode fs.FileMode // permission bits, plus fs.ModeDir for a directory
	Data []byte      // content of a regular file
}

// Package is everything an .ipk is made of.
type Package struct {
	Control   Control
	Conffiles []string // absolute paths of regular files in Files
	// Postinst and Prerm are the maintainer scripts; empty means OpenWrt's generated ones.
	Postinst, Prerm string
	Files           []File // parent directories missing from Files are added with mode 0755
}

var packageName = regexp.MustCompile(`^[a-zA-Z0-9_.+-]+$`)

// FileName is the name ipkg-build gives the package file: NAME_VERSION_ARCH.ipk, with an
// epoch ("1:") dropped from the version.
func FileName(c Control) string {
	v := c.Version
	if i := strings.IndexByte(v, ':'); i == 1 {
		v = v[2:]
	}
	return c.Package + "_" + v + "_" + c.Architecture + ".ipk"
}

// Write writes the package as an .ipk to w.
func Write(w io.Writer, p *Package) error {
	a, err := p.archives()
	if err != nil {
		return err
	}
	ipk, err := gzipBytes(a.outer)
	if err != nil {
		return err
	}
	_, err = w.Write(ipk)
	return err
}

// archives are the three tar archives of a package, before the outer one is compressed.
type archives struct {
	data, control, outer []byte
}

func (p *Package) archives() (*archives, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	mtime := p.Control.SourceDateEpoch

	tree, err := buildTree(p.Files)
	if err != nil {
		return nil, err
	}
	var data tarWriter
	if err := tree.write(&data, ".", mtime); err != nil {
		return nil, err
	}
	a := &archives{data: data.finish()}

	control := []tarEntry{{name: "./", mode: 0o755 | fs.ModeDir, mtime: mtime}}
	if len(p.Conffiles) > 0 {
		cf := append([]string(nil), p.Conffiles...)
		sort.Strings(cf)
		control = append(control, tarEntry{name: "./conffiles", mode: 0o644, mtime: mtime,
			data: []byte(strings.Join(cf, "\n") + "\n")})
	}
	postinst, prerm := p.Postinst, p.Prerm
	if postinst == "" {
		postinst = Postinst
	}
	if prerm == "" {
		prerm = Prerm
	}
	control = append(control,
		tarEntry{name: "./control", mode: 0o644, mtime: mtime, data: p.Control.text(int64(len(a.data)))},
		tarEntry{name: "./postinst", mode: 0o755, mtime: mtime, data: []byte(postinst)},
		tarEntry{name: "./prerm", mode: 0o755, mtime: mtime, data: []byte(prerm)})
	var ctl tarWriter
	for _, e := range control {
		if err := ctl.add(e); err != nil {
			return nil, err
		}
	}
	a.control = ctl.finish()

	dataGz, err := gzipBytes(a.data)
	if err != nil {
		return nil, err
	}
	ctlGz, err := gzipBytes(a.control)
	if err != nil {
		return nil, err
	}
	var outer tarWriter
	for _, e := range []tarEntry{
		{name: "./debian-binary", mode: 0o644, mtime: mtime, data: []byte("2.0\n")},
		{name: "./data.tar.gz", mode: 0o644, mtime: mtime, data: dataGz},
		{name: "./control.tar.gz", mode: 0o644, mtime: mtime, data: ctlGz},
	} {
		if err := outer.add(e); err != nil {
			return nil, err
		}
	}
	a.outer = outer.finish()
	return a, nil
}

func (p *Package) check() error {
	c := &p.Control
	if !packageName.MatchString(c.Package) {
		return fmt.Errorf("package name %q: only letters, digits and _.+- are allowed", c.Package)
	}
	for name, v := range map[string]string{"Version": c.Version, "Architecture": c.Architecture} {
		if v == "" || strings.ContainsAny(v, " \t\n/") {
			return fmt.Errorf("control field %s %q: must be one word", name, v)
		}
	}
	if c.SourceDateEpoch < 0 {
		return fmt.Errorf("SourceDateEpoch %d: must not be negative", c.SourceDateEpoch)
	}
	for _, d := range c.Depends {
		if d == "" || strings.ContainsAny(d, ", \t\n") {
			return fmt.Errorf("dependency %q: must be one package name", d)
		}
	}
	for _, f := range []string{c.Source, c.SourceName, c.License, c.LicenseFiles, c.Section, c.URL, c.Maintainer} {
		if strings.ContainsAny(f, "\n") {
			return fmt.Errorf("control field %q: must be one line", f)
		}
	}
	files := make(map[string]File, len(p.Files))
	for _, f := range p.Files {
		files[f.Path] = f
	}
	for _, cf := range p.Conffiles {
		f, ok := files[cf]
		if !ok || !f.Mode.IsRegular() {
			return fmt.Errorf("conffile %s: not a regular file of the package", cf)
		}
	}
	return nil
}

// text renders the control file as package-pack.mk does.
func (c *Control) text(installedSize int64) []byte {
	var b bytes.Buffer
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%s: %s\n", name, value)
		}
	}
	field("Package", c.Package)
	field("Version", c.Version)
	field("Depends", strings.Join(c.Depends, ", "))
	field("Source", c.Source)
	field("SourceName", c.SourceName)
	field("License", c.License)
	field("LicenseFiles", c.LicenseFiles)
	field("Section", c.Section)
	field("SourceDateEpoch", strconv.FormatInt(c.SourceDateEpoch, 10))
	field("URL", c.URL)
	field("Maintainer", c.Maintainer)
	field("Architecture", c.Architecture)
	field("Installed-Size", strconv.FormatInt(installedSize, 10))
	// printf "Description: "; echo "$DESCRIPTION" | sed -e 's,^[[:space:]]*, ,g'
	b.WriteString("Description: ")
	for _, line := range strings.Split(c.Description, "\n") {
		b.WriteString(" " + strings.TrimLeft(line, " \t\v\f\r") + "\n")
	}
	return b.Bytes()
}

// node is a directory of the installed tree, or a file when children is nil.
type node struct {
	mode     fs.FileMode
	data     []byte
	children map[string]*node
}

func buildTree(files []File) (*node, error) {
	root := &node{mode: fs.ModeDir | 0o755, children: map[string]*node{}}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("file %q: path must be absolute and clean", f.Path)
		}
		if f.Mode&^(fs.ModeDir|fs.ModePerm) != 0 {
			return nil, fmt.Errorf("file %s: mode %v: only directories and regular files", f.Path, f.Mode)
		}
		if f.Mode.IsDir() && len(f.Data) > 0 {
			return nil, fmt.Errorf("file %s: a directory has no data", f.Path)
		}
		dir := root
		parts := strings.Split(f.Path[1:], "/")
		for i, name := range parts {
			n, ok := dir.children[name]
			last := i == len(parts)-1
			switch {
			case !ok && last:
				n = &node{mode: f.Mode, data: f.Data}
				if f.Mode.IsDir() {
					n.children = map[string]*node{}
				}
				dir.children[name] = n
			case !ok:
				n = &node{mode: fs.ModeDir | 0o755, children: map[string]*node{}}
				dir.children[name] = n
			case last && n.mode.IsDir() && f.Mode.IsDir():
				n.mode = f.Mode // an explicit directory sets the mode of an implied one
			case last:
				return nil, fmt.Errorf("file %s: listed twice", f.Path)
			case !n.mode.IsDir():
				return nil, fmt.Errorf("file %s: %s is a file, not a directory", f.Path, "/"+strings.Join(parts[:i+1], "/"))
			}
			dir = n
		}
	}
	return root, nil
}

// write adds n (named name) and, depth first in name order, everything under it: the order
// of GNU tar --sort=name.
func (n *node) write(tw *tarWriter, name string, mtime int64) error {
	if !n.mode.IsDir() {
		return tw.add(tarEntry{name: name, mode: n.mode, mtime: mtime, data: n.data})
	}
	if err := tw.add(tarEntry{name: name + "/", mode: n.mode, mtime: mtime}); err != nil {
		return err
	}
	names := make([]string, 0, len(n.children))
	for c := range n.children {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		if err := n.children[c].write(tw, name+"/"+c, mtime); err != nil {
			return err
		}
	}
	return nil
}

func gzipBytes(b []byte) ([]byte, error) {
	var out bytes.Buffer
	// gzip -n: no name, no time; the OS byte says Unix, as gzip writes it.
	zw := gzip.NewWriter(&out)
	zw.OS = 3
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return out.Bytes(), nil
}
