package feedpkg

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const small = `# a package
include $(TOPDIR)/rules.mk

PKG_NAME:=demo
PKG_VERSION:=1.2
PKG_RELEASE:=3
PKG_LICENSE:=MIT
TOP:=$(CURDIR)/..
FILES=$(TOP)/files
KIND:=$(if $(CONFIG_DEMO_DEV),dev,prod)
GO_PKG:=example.com/demo
GO_PKG_BUILD_PKG:=$(GO_PKG)/cmd/demod
GO_PKG_LDFLAGS_X:=main.version=$(PKG_VERSION) \
	main.kind=$(KIND)

define Package/demo
  SECTION:=net
  TITLE:=Demo $$ daemon
  DEPENDS:=$(GO_ARCH_DEPENDS) +liba \
	+PACKAGE_x:libx
endef

define Package/demo/description
  Line one.
	Line two.
endef

define Package/demo/conffiles
/etc/config/demo
endef

define Package/demo/install
	$(call GoPackage/Package/Install/Bin,$(1))
	$(INSTALL_DIR) $(1)/etc/config $(1)/etc/demo
	$(INSTALL_CONF) $(FILES)/demo.$(KIND) \
		$(1)/etc/config/demo
	$(INSTALL_DATA) $(FILES)/a $(FILES)/b $(1)/etc/demo/
	$(INSTALL_BIN) $(FILES)/*.sh $(1)/etc/demo/
endef

$(eval $(call BuildPackage,demo))
`

func TestParse(t *testing.T) {
	d, err := Parse([]byte(small), map[string]string{"CURDIR": "/src/pkg", "CONFIG_DEMO_DEV": "y"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Definition{
		Name: "demo", Version: "1.2", Release: "3", License: "MIT",
		Section: "net", Title: "Demo $ daemon",
		Depends:          GoArchDepends + " +liba +PACKAGE_x:libx",
		Description:      "  Line one.\n\tLine two.",
		Conffiles:        []string{"/etc/config/demo"},
		GoBuildPkg:       "example.com/demo/cmd/demod",
		GoInstallBinPath: "/usr/bin",
		GoLDFlagsX:       []string{"main.version=1.2", "main.kind=dev"},
		Install: []Step{
			{Line: 33, Op: "gobin"},
			{Line: 34, Op: "dir", Args: []string{"/etc/config", "/etc/demo"}},
			{Line: 35, Op: "conf", Args: []string{"/src/pkg/../files/demo.dev", "/etc/config/demo"}},
			{Line: 37, Op: "data", Args: []string{"/src/pkg/../files/a", "/src/pkg/../files/b", "/etc/demo/"}},
			{Line: 38, Op: "bin", Args: []string{"/src/pkg/../files/*.sh", "/etc/demo/"}},
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("got  %+v\nwant %+v", d, want)
	}
	if d.FullVersion() != "1.2-3" {
		t.Errorf("version %s", d.FullVersion())
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ change, want string }{
		"unknown variable": {"PKG_VERSION:=$(NOPE)", "$(NOPE) is not defined"},
		"function":         {"PKG_VERSION:=$(shell date)", "not supported"},
		"conditional":      {"ifeq ($(A),b)\nendif", "not supported"},
		"no endef":         {"define Package/demo/x\nfoo", "has no endef"},
		"unbalanced":       {"PKG_VERSION:=$(PKG_NAME", "unbalanced"},
		"lone dollar":      {"PKG_VERSION:=1$", "lone $"},
		"short reference":  {"PKG_VERSION:=$X", "only $(NAME)"},
		"not assignment":   {"just words", "not an assignment"},
		"script":           {"define Package/demo/postinst\n#!/bin/sh\nendef", "not supported"},
		"loop":             {"A=$(B)\nB=$(A)\nPKG_VERSION:=$(A)", "too deeply"},
		"bad if":           {"PKG_VERSION:=$(if a)", "want $(if"},
		"no name":          {"PKG_NAME:=", "PKG_NAME is empty"},
		"no define":        {"PKG_NAME:=other", "no define Package/other"},
	} {
		_, err := Parse([]byte(small+"\n"+tc.change+"\n"), map[string]string{"CURDIR": "/src/pkg"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
	for name, tc := range map[string]struct{ line, want string }{
		"unknown command":  {"\t$(CP) a $(1)/b", "not an install command"},
		"no destination":   {"\t$(INSTALL_BIN) a", "missing arguments"},
		"host destination": {"\t$(INSTALL_BIN) a /etc/b", "must start with $(1)/"},
	} {
		src := strings.Replace(small, "\t$(INSTALL_DIR) $(1)/etc/config", tc.line+"\n\t$(INSTALL_DIR) $(1)/etc/config", 1)
		_, err := Parse([]byte(src), map[string]string{"CURDIR": "/src/pkg"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestResolveDepends(t *testing.T) {
	deps := GoArchDepends + " +kmod-a +PACKAGE_fw4:kmod-b +PACKAGE_fw3:kmod-c +!PACKAGE_fw4:kmod-d" +
		" +(A||B):e +A&&B:f +libc @SOMETHING"
	for _, tc := range []struct {
		config map[string]string
		want   []string
	}{
		{nil, []string{"libc", "kmod-a", "kmod-d"}},
		{map[string]string{"CONFIG_PACKAGE_fw4": "y"}, []string{"libc", "kmod-a", "kmod-b"}},
		{map[string]string{"CONFIG_PACKAGE_fw3": "y", "CONFIG_B": "y"}, []string{"libc", "kmod-a", "kmod-c", "kmod-d", "e"}},
		{map[string]string{"CONFIG_A": "y", "CONFIG_B": "y"}, []string{"libc", "kmod-a", "kmod-d", "e", "f"}},
	} {
		if got := ResolveDepends(deps, tc.config); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.config, got, tc.want)
		}
	}
}

func TestStage(t *testing.T) {
	dir := t.TempDir()
	pkgDir := filepath.Join(dir, "pkg")
	files := filepath.Join(dir, "files")
	for _, d := range []string{pkgDir, files} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{"demo.prod": "prod\n", "demo.dev": "dev\n", "a": "A", "b": "B",
		"y.sh": "Y", "x.sh": "X"} {
		if err := os.WriteFile(filepath.Join(files, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "demod.bin")
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := Parse([]byte(small), map[string]string{"CURDIR": pkgDir})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Stage(bin)
	if err != nil {
		t.Fatal(err)
	}
	type f struct {
		mode fs.FileMode
		data string
	}
	want := map[string]f{
		"/etc": {fs.ModeDir | 0o755, ""}, "/etc/config": {fs.ModeDir | 0o755, ""},
		"/etc/config/demo": {0o600, "prod\n"}, "/etc/demo": {fs.ModeDir | 0o755, ""},
		"/etc/demo/a": {0o644, "A"}, "/etc/demo/b": {0o644, "B"},
		"/etc/demo/x.sh": {0o755, "X"}, "/etc/demo/y.sh": {0o755, "Y"},
		"/usr": {fs.ModeDir | 0o755, ""}, "/usr/bin": {fs.ModeDir | 0o755, ""},
		"/usr/bin/demod": {0o755, "\x7fELF"},
	}
	if len(got) != len(want) {
		t.Errorf("%d files, want %d: %v", len(got), len(want), got)
	}
	for _, g := range got {
		if w, ok := want[g.Path]; !ok || w.mode != g.Mode || w.data != string(g.Data) {
			t.Errorf("%s: %v %q, want %v %q", g.Path, g.Mode, g.Data, w.mode, w.data)
		}
	}

	// A file into a directory not made first fails, as install(1) without -D does.
	bad := strings.Replace(small, "$(INSTALL_DIR) $(1)/etc/config $(1)/etc/demo", "$(INSTALL_DIR) $(1)/etc/demo", 1)
	d, err = Parse([]byte(bad), map[string]string{"CURDIR": pkgDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stage(bin); err == nil || !strings.Contains(err.Error(), "is not made first") {
		t.Errorf("install into a missing directory: %v", err)
	}
	// A pattern that matches nothing fails, as install(1) would on the unexpanded pattern.
	if err := os.Remove(filepath.Join(files, "x.sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(files, "y.sh")); err != nil {
		t.Fatal(err)
	}
	d, err = Parse([]byte(small), map[string]string{"CURDIR": pkgDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stage(bin); err == nil || !strings.Contains(err.Error(), "matches no file") {
		t.Errorf("empty glob: %v", err)
	}
	// A missing source names the file.
	if _, err := d.Stage(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing binary: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(small))
	if b, err := os.ReadFile(feedMakefile); err == nil {
		f.Add(b)
	}
	f.Add([]byte("A=$(if $(B),$(C),$(D)\nPKG_NAME:=$($$)"))
	f.Fuzz(func(t *testing.T, src []byte) {
		d, err := Parse(src, map[string]string{"CURDIR": "/x"})
		if err == nil && (d.Name == "" || d.Version == "") {
			t.Errorf("parsed without name or version: %+v", d)
		}
	})
}
