// Command mkipk packs af-conn as an OpenWrt .ipk without the OpenWrt SDK: it reads the
// package definition from the feed Makefile (openwrt/af-conn/Makefile), lays out the files
// its install recipe installs, and writes the package as OpenWrt's ipkg-build would. It also
// tells the Go settings for each OpenWrt architecture, so `make cross` and `make ipk` build
// the binary that matches.
//
//	mkipk -archs                      the supported OpenWrt architectures
//	mkipk -goenv ARCH                 GOOS=... GOARCH=... for a CGO_ENABLED=0 build for ARCH
//	mkipk -feed DIR -print-version    the package version, PKG_VERSION-PKG_RELEASE
//	mkipk -feed DIR [-firewall F] -print-tags  the go build tags (GO_PKG_TAGS) for that firewall
//	mkipk -feed DIR -print-gcflags    the go build -gcflags (GO_PKG_GCFLAGS)
//	mkipk -feed DIR -arch ARCH -bin CONNMGR -out DIR [-version V] [-firewall fw4|fw3|none]
//	      [-config CONFIG_NAME=VALUE]...
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
		source       = fs.String("source", "feeds/afconn/af-conn", "the control file's Source field")
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
	if *printVersion {
		fmt.Fprintln(stdout, def.FullVersion())
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
		*version = def.FullVersion()
	}
	p := &ipk.Package{
		Control: ipk.Control{
			Package:         def.Name,
			Version:         *version,
			Depends:         feedpkg.ResolveDepends(def.Depends, config),
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
	return writeIPK(*out, p, stdout)
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

// writeIPK writes the package into dir under ipkg-build's name, replacing any older file
// only once the new one is complete.
func writeIPK(dir string, p *ipk.Package, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := filepath.Join(dir, ipk.FileName(p.Control))
	tmp, err := os.CreateTemp(dir, ".mkipk-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := ipk.Write(tmp, p); err != nil {
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
