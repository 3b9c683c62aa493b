// Command mkipk packs af-conn as an OpenWrt package without the OpenWrt SDK: it reads the
// package definition from the feed Makefile (openwrt/af-conn/Makefile), lays out the files
// its install recipe installs, and writes the package as OpenWrt's build would: an .ipk as
// ipkg-build writes it (OpenWrt 24.10 and older, opkg), or with -format apk an APK v3 .apk
// as package-pack.mk writes it with `apk mkpkg` (OpenWrt 25.12, apk). It also tells the Go
// settings for each OpenWrt architecture, so `make cross`, `make ipk` and `make apk` build
// the binary that matches.
//
//	mkipk -archs                      the supported OpenWrt architectures
//	mkipk -goenv ARCH                 GOOS=... GOARCH=... for a CGO_ENABLED=0 build for ARCH
//	mkipk -feed DIR [-format apk] -print-version
//	                                  the package version: PKG_VERSION-PKG_RELEASE for an
//	                                  .ipk, PKG_VERSION-rPKG_RELEASE for an .apk
//	mkipk -feed DIR [-firewall F] -print-tags  the go build tags (GO_PKG_TAGS) for that firewall
//	mkipk -feed DIR -print-gcflags    the go build -gcflags (GO_PKG_GCFLAGS)
//	mkipk -feed DIR -arch ARCH -bin CONNMGR -out DIR [-format ipk|apk] [-version V]
//	      [-firewall fw4|fw3|none] [-config CONFIG_NAME=VALUE]...
//
// Packing needs SOURCE_DATE_EPOCH: it is every time stamp in the package, which then
// depends on nothing but its inputs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/afero/af-conn/internal/apkv3"
	"github.com/afero/af-conn/internal/feedpkg"
	"github.com/afero/af-conn/internal/ipk"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "mkipk:", err)
		os.Exit(1)
	}
}

type configFlags map[string]string

func (c configFlags) String() string { return "" }

func (c configFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(name, "CONFIG_") {
		return fmt.Errorf("%q: want CONFIG_NAME=VALUE", s)
	}
	c[name] = value
	return nil
}

// firewalls maps -firewall to the firewall package an image would select.
var firewalls = map[string]string{"fw4": "firewall4", "fw3": "firewall", "none": ""}

func run(args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("mkipk", flag.ContinueOnError)
	var (
		archs        = fs.Bool("archs", false, "list the supported OpenWrt architectures")
		goenv        = fs.String("goenv", "", "print the Go build settings for this OpenWrt `arch`")
		feed         = fs.String("feed", "", "the feed package `dir`ectory (openwrt/af-conn)")
		printVersion = fs.Bool("print-version", false, "print the package version")
		printTags    = fs.Bool("print-tags", false, "print the go build tags for -firewall (GO_PKG_TAGS)")
		printGCFlags = fs.Bool("print-gcflags", false, "print the go build -gcflags (GO_PKG_GCFLAGS)")
		arch         = fs.String("arch", "", "OpenWrt package `arch`itecture to pack for")
		bin          = fs.String("bin", "", "the connmgr `binary` built for -arch")
		out          = fs.String("out", "", "output `dir`ectory")
		version      = fs.String("version", "", "package `version` (default: PKG_VERSION-PKG_RELEASE)")
		firewall     = fs.String("firewall", "fw4", "the firewall of the target images, for DEPENDS and the build tags: fw4, fw3 or none")
		source       = fs.String("source", "feeds/afconn/af-conn", "the control file's Source field (an .apk's origin)")
		format       = fs.String("format", "ipk", "package format: ipk (opkg) or apk (APK v3, OpenWrt 25.12)")
		config       = configFlags{}
	)
	fs.Var(config, "config", "set a build option, as `CONFIG_NAME=VALUE` (repeatable)")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *archs:
		for _, t := range targets {
			fmt.Fprintln(stdout, t.arch)
		}
		return nil
	case *goenv != "":
		t, err := lookupTarget(*goenv)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, strings.Join(t.goEnv(), " "))
		return nil
	}
	if *feed == "" {
		return errors.New("-feed is required")
	}
	if *format != "ipk" && *format != "apk" {
		return fmt.Errorf("-format %q: want ipk or apk", *format)
	}
	fwPkg, ok := firewalls[*firewall]
	if !ok {
		return fmt.Errorf("-firewall %q: want fw4, fw3 or none", *firewall)
	}
	if fwPkg != "" {
		config["CONFIG_PACKAGE_"+fwPkg] = "y"
	}
	def, err := readFeed(*feed, config)
	if err != nil {
		return err
	}
	defaultVersion := def.FullVersion()
	if *format == "apk" {
		defaultVersion = def.APKVersion()
	}
	if *printVersion {
		fmt.Fprintln(stdout, defaultVersion)
		return nil
	}
	if *printTags {
		fmt.Fprintln(stdout, def.GoTags)
		return nil
	}
	if *printGCFlags {
		fmt.Fprintln(stdout, def.GoGCFlags)
		return nil
	}

	if *arch == "" || *bin == "" || *out == "" {
		return errors.New("-arch, -bin and -out are required to pack")
	}
	t, err := lookupTarget(*arch)
	if err != nil {
		return err
	}
	if err := t.checkBinary(*bin); err != nil {
		return err
	}
	epoch, err := strconv.ParseInt(getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil || epoch < 0 {
		return fmt.Errorf("SOURCE_DATE_EPOCH %q: want the time of the source, in seconds since 1970", getenv("SOURCE_DATE_EPOCH"))
	}
	files, err := def.Stage(*bin)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(*feed, "Makefile"), err)
	}
	if *version == "" {
		*version = defaultVersion
	}
	depends := feedpkg.ResolveDepends(def.Depends, config)
	if *format == "apk" {
		return writeAPK(*out, def, t.arch, *version, *source, depends, files, epoch, stdout)
	}
	p := &ipk.Package{
		Control: ipk.Control{
			Package:         def.Name,
			Version:         *version,
			Depends:         depends,
			Source:          *source,
			SourceName:      def.Name,
			License:         def.License,
			LicenseFiles:    def.LicenseFiles,
			Section:         def.Section,
			SourceDateEpoch: epoch,
			URL:             def.URL,
			Maintainer:      def.Maintainer,
			Architecture:    t.arch,
			Description:     def.Description,
		},
		Conffiles: def.Conffiles,
		Files:     files,
	}
	return writeFile(*out, ipk.FileName(p.Control), func(w io.Writer) error { return ipk.Write(w, p) }, stdout)
}

// writeAPK packs the files as package-pack.mk does with CONFIG_USE_APK: OpenWrt's own files
// under /lib/apk/packages added to the payload, its scripts, and the info fields it passes
// to `apk mkpkg --info`.
func writeAPK(out string, def *feedpkg.Definition, arch, version, source string, depends []string, files []ipk.File, epoch int64, stdout io.Writer) error {
	files, err := apkv3.OpenWrtFiles(def.Name, files, def.Conffiles)
	if err != nil {
		return err
	}
	p := &apkv3.Package{
		Info: apkv3.Info{
			Name:    def.Name,
			Version: version,
			// --info "description:$(strip $(Package/NAME/description))": one line.
			Description: strings.Join(strings.Fields(def.Description), " "),
			Arch:        arch,
			License:     def.License,
			Origin:      source,
			URL:         def.URL,
			Maintainer:  def.Maintainer,
			Depends:     depends,
			// Every package provides the virtual NAME-any (package-pack.mk's FormatProvides:
			// "Packages implicitly add a virtual @${package_name}-any provide").
			Provides: []string{def.Name + "-any"},
		},
		Scripts:         apkv3.OpenWrtScripts(def.Name),
		Files:           files,
		SourceDateEpoch: epoch,
	}
	return writeFile(out, apkv3.FileName(p.Info), func(w io.Writer) error { return apkv3.Write(w, p) }, stdout)
}

func readFeed(dir string, config map[string]string) (*feedpkg.Definition, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// make's CURDIR is the physical directory: the feed's symlinks resolved.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	path := filepath.Join(abs, "Makefile")
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{"CURDIR": abs}
	for k, v := range config {
		env[k] = v
	}
	def, err := feedpkg.Parse(src, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return def, nil
}

// writeFile writes a package into dir under the build's name for it, replacing any older
// file only once the new one is complete.
func writeFile(dir, base string, write func(io.Writer) error, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := filepath.Join(dir, base)
	tmp, err := os.CreateTemp(dir, ".mkipk-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return err
	}
	fmt.Fprintln(stdout, name)
	return nil
}
