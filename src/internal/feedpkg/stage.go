package feedpkg

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/afero/af-conn/internal/ipk"
)

// Modes of rules.mk's INSTALL_BIN, INSTALL_CONF and INSTALL_DATA (install -m...).
var installModes = map[string]fs.FileMode{"bin": 0o755, "conf": 0o600, "data": 0o644}

// Stage runs the install recipe as the build would into an empty package root and returns
// what it holds. binary is the built program that GoPackage/Package/Install/Bin installs
// (as GO_PKG_INSTALL_BIN_PATH/<last element of GO_PKG_BUILD_PKG>); sources are read from the
// host. Like install(1) without -D, a file can only go into a directory made before it.
func (d *Definition) Stage(binary string) ([]ipk.File, error) {
	tree := map[string]ipk.File{}
	mkdir := func(dir string) {
		for p := dir; p != "/"; p = path.Dir(p) {
			if _, ok := tree[p]; !ok {
				tree[p] = ipk.File{Path: p, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	put := func(st Step, src, dst string, mode fs.FileMode) error {
		if dir, ok := tree[dst]; ok && dir.Mode.IsDir() {
			dst = path.Join(dst, path.Base(src))
		}
		if parent, ok := tree[path.Dir(dst)]; path.Dir(dst) != "/" && (!ok || !parent.Mode.IsDir()) {
			return fmt.Errorf("line %d: %s: directory %s is not made first ($(INSTALL_DIR))", st.Line, dst, path.Dir(dst))
		}
		if f, ok := tree[dst]; ok && f.Mode.IsDir() {
			return fmt.Errorf("line %d: %s is a directory", st.Line, dst)
		}
		info, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("line %d: %w", st.Line, err)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("line %d: %s: not a regular file", st.Line, src)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("line %d: %w", st.Line, err)
		}
		tree[dst] = ipk.File{Path: dst, Mode: mode, Data: data}
		return nil
	}
	for _, st := range d.Install {
		switch st.Op {
		case "dir":
			for _, dir := range st.Args {
				dir = path.Clean(dir)
				mkdir(dir)
				tree[dir] = ipk.File{Path: dir, Mode: fs.ModeDir | 0o755}
			}
		case "gobin":
			// golang-build.sh install_bin: install -d -m0755 DIR; install -m0755 BIN DIR/
			dir := path.Clean(d.GoInstallBinPath)
			mkdir(dir)
			name := path.Base(d.GoBuildPkg)
			if err := put(st, binary, path.Join(dir, name), 0o755); err != nil {
				return nil, err
			}
		default:
			mode, ok := installModes[st.Op]
			if !ok {
				return nil, fmt.Errorf("line %d: unknown install step %q", st.Line, st.Op)
			}
			srcs, dst := st.Args[:len(st.Args)-1], path.Clean(st.Args[len(st.Args)-1])
			srcs, err := glob(st, srcs)
			if err != nil {
				return nil, err
			}
			if len(srcs) > 1 || strings.HasSuffix(st.Args[len(st.Args)-1], "/") {
				if f, ok := tree[dst]; !ok || !f.Mode.IsDir() {
					return nil, fmt.Errorf("line %d: %s: not a directory made before", st.Line, dst)
				}
			}
			for _, src := range srcs {
				if err := put(st, src, dst, mode); err != nil {
					return nil, err
				}
			}
		}
	}
	files := make([]ipk.File, 0, len(tree))
	for _, f := range tree {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, cf := range d.Conffiles {
		if f, ok := tree[cf]; !ok || !f.Mode.IsRegular() {
			return nil, fmt.Errorf("conffile %s is not installed", cf)
		}
	}
	return files, nil
}

// glob expands the shell patterns among an install's sources as the recipe's shell would
// (sorted); a pattern that matches nothing is an error, as install(1) would fail on it.
func glob(st Step, srcs []string) ([]string, error) {
	var out []string
	for _, src := range srcs {
		if !strings.ContainsAny(src, "*?[") {
			out = append(out, src)
			continue
		}
		matches, err := filepath.Glob(src)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", st.Line, src, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("line %d: %s matches no file", st.Line, src)
		}
		sort.Strings(matches)
		out = append(out, matches...)
	}
	return out, nil
}
