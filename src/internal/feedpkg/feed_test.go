package feedpkg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/apkv3"
)

// The repository's own feed Makefile and files/, which make ipk packs.
var (
	feedDir      = filepath.Join("..", "..", "..", "openwrt", "af-conn")
	feedMakefile = filepath.Join(feedDir, "Makefile")
	filesDir     = filepath.Join("..", "..", "..", "files")
)

func parseFeed(t *testing.T, config map[string]string) *Definition {
	t.Helper()
	src, err := os.ReadFile(feedMakefile)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(feedDir)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CURDIR": abs}
	for k, v := range config {
		env[k] = v
	}
	d, err := Parse(src, env)
	if err != nil {
		t.Fatalf("%s: %v", feedMakefile, err)
	}
	return d
}

func TestFeedMakefile(t *testing.T) {
	d := parseFeed(t, nil)
	if d.Name != "af-conn" || d.Section != "net" || d.GoBuildPkg != "github.com/afero/af-conn/cmd/connmgr" ||
		d.GoInstallBinPath != "/usr/sbin" {
		t.Errorf("definition %+v", d)
	}
	// An apk build (OpenWrt 25.12) refuses a version apk cannot parse.
	if v := d.APKVersion(); !apkv3.ValidVersion(v) || v != d.Version+"-r"+d.Release {
		t.Errorf("apk version %q from PKG_VERSION %q and PKG_RELEASE %q is not a valid apk version", v, d.Version, d.Release)
	}
	if want := []string{"main.version=" + d.FullVersion()}; !reflect.DeepEqual(d.GoLDFlagsX, want) {
		t.Errorf("GO_PKG_LDFLAGS_X %v, want %v", d.GoLDFlagsX, want)
	}
	if want := []string{"/etc/config/connmgr", "/etc/af-conn/whitelist"}; !reflect.DeepEqual(d.Conffiles, want) {
		t.Errorf("conffiles %v, want %v", d.Conffiles, want)
	}
	for _, tc := range []struct {
		firewall string
		want     []string
	}{
		{"firewall4", []string{"libc", "kmod-nf-conntrack-netlink", "kmod-nft-queue"}},
		{"firewall", []string{"libc", "kmod-nf-conntrack-netlink", "kmod-ipt-nfqueue", "kmod-ipt-ipset",
			"iptables", "iptables-mod-nfqueue"}},
		{"", []string{"libc", "kmod-nf-conntrack-netlink"}},
	} {
		got := ResolveDepends(d.Depends, map[string]string{"CONFIG_PACKAGE_" + tc.firewall: "y"})
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("with %q: Depends %v, want %v", tc.firewall, got, tc.want)
		}
	}
}

// TestFeedStagesEveryFile checks that the install recipe packs every file under files/ (so
// none is forgotten), each whitelist by its build option, with OpenWrt's modes.
func TestFeedStagesEveryFile(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "connmgr")
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	var inFiles []string
	err := filepath.WalkDir(filesDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			inFiles = append(inFiles, "/"+filepath.ToSlash(strings.TrimPrefix(p, filesDir+string(filepath.Separator))))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"", "y"} {
		staged, err := parseFeed(t, map[string]string{"CONFIG_AF_CONN_WHITELIST_DEV": dev}).Stage(bin)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]fs.FileMode{}
		var paths []string
		for _, f := range staged {
			if !f.Mode.IsDir() {
				got[f.Path] = f.Mode
				paths = append(paths, f.Path)
			}
		}
		sort.Strings(paths)
		want := map[string]fs.FileMode{"/usr/sbin/connmgr": 0o755}
		for _, p := range inFiles {
			mode := fs.FileMode(0o644)
			switch {
			case strings.HasPrefix(p, "/etc/af-conn/whitelist."):
				suffix := map[string]string{"": "prod", "y": "dev"}[dev]
				if p != "/etc/af-conn/whitelist."+suffix {
					continue
				}
				p, mode = "/etc/af-conn/whitelist", 0o600
			case p == "/etc/config/connmgr":
				mode = 0o600
			case strings.HasPrefix(p, "/etc/init.d/"), strings.HasSuffix(p, ".sh"):
				mode = 0o755
			}
			want[p] = mode
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("whitelist dev %q: staged %v\nwant %v", dev, got, want)
		}
		data, err := os.ReadFile(filepath.Join(filesDir, "etc", "af-conn", "whitelist."+map[string]string{"": "prod", "y": "dev"}[dev]))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range staged {
			if f.Path == "/etc/af-conn/whitelist" && string(f.Data) != string(data) {
				t.Errorf("whitelist dev %q: wrong whitelist installed", dev)
			}
		}
	}
}

// TestShippedConfigIsTheDefault: /etc/config/connmgr as shipped must be the configuration
// package config documents as its defaults, byte for byte.
func TestShippedConfigIsTheDefault(t *testing.T) {
	def, err := os.ReadFile(filepath.Join("..", "config", "default.uci"))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("src/internal/config/default.uci does not exist yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(filesDir, "etc", "config", "connmgr"))
	if err != nil {
		t.Fatal(err)
	}
	if string(shipped) != string(def) {
		t.Error("files/etc/config/connmgr differs from src/internal/config/default.uci: copy it over")
	}
}
