package apkv3

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/afero/af-conn/internal/ipk"
)

// OpenWrtScripts are the scripts OpenWrt's package-pack.mk generates for an apk package with
// no maintainer scripts of its own: post-install hands over to base-files' default_postinst
// (enable and start the init scripts, run uci-defaults on a live system; only enable when
// IPKG_INSTROOT names an image root), post-upgrade is the same with PKG_UPGRADE=1 (start
// without enabling again), pre-deinstall hands over to default_prerm (stop, and disable
// unless upgrading). root and pkgname are what those functions read instead of $0.
func OpenWrtScripts(name string) map[string]string {
	postInstall := "[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n" +
		"[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n" +
		". ${IPKG_INSTROOT}/lib/functions.sh\n" +
		"export root=\"${IPKG_INSTROOT}\"\n" +
		"export pkgname=\"" + name + "\"\n" +
		"add_group_and_user\n" +
		"default_postinst\n"
	return map[string]string{
		"post-install": "#!/bin/sh\n" + postInstall,
		// The post-install script with its #! line deleted (sed '/^\s*#!/d').
		"post-upgrade": "#!/bin/sh\nexport PKG_UPGRADE=1\n" + postInstall,
		"pre-deinstall": "#!/bin/sh\n" +
			"[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n" +
			". ${IPKG_INSTROOT}/lib/functions.sh\n" +
			"export root=\"${IPKG_INSTROOT}\"\n" +
			"export pkgname=\"" + name + "\"\n" +
			"default_prerm\n",
	}
}

// OpenWrtPackageDir is where OpenWrt keeps its own record of an apk package's files.
const OpenWrtPackageDir = "/lib/apk/packages"

// OpenWrtFiles returns files plus what package-pack.mk adds to the payload under
// /lib/apk/packages: NAME.list, every regular file of the package (sorted, as `find -type f,l
// | sort` under LC_ALL=C), which default_postinst and default_prerm read for the init
// scripts; NAME.conffiles, the Makefile's conffiles define as echo writes it; and
// NAME.conffiles_static, each conffile with the sha256 it is shipped with, which sysupgrade
// compares to tell changed configuration from stock.
func OpenWrtFiles(name string, files []ipk.File, conffiles []string) ([]ipk.File, error) {
	regular := map[string]ipk.File{}
	var list []string
	for _, f := range files {
		if strings.HasPrefix(f.Path, OpenWrtPackageDir+"/") {
			return nil, fmt.Errorf("file %s: %s is OpenWrt's own", f.Path, OpenWrtPackageDir)
		}
		if f.Mode.IsRegular() {
			regular[f.Path] = f
			list = append(list, f.Path)
		}
	}
	sort.Strings(list)
	out := append([]ipk.File(nil), files...)
	for dir := OpenWrtPackageDir; dir != "/"; dir = path.Dir(dir) {
		out = append(out, ipk.File{Path: dir, Mode: fs.ModeDir | 0o755})
	}
	add := func(suffix, text string) {
		out = append(out, ipk.File{Path: path.Join(OpenWrtPackageDir, name+suffix), Mode: 0o644, Data: []byte(text)})
	}
	add(".list", strings.Join(list, "\n")+"\n")
	if len(conffiles) > 0 {
		add(".conffiles", strings.Join(conffiles, "\n")+"\n")
		var static strings.Builder
		for _, cf := range conffiles {
			f, ok := regular[cf]
			if !ok {
				continue // [ -f $file ] || continue
			}
			sum := sha256.Sum256(f.Data)
			static.WriteString(cf + " " + hex.EncodeToString(sum[:]) + "\n")
		}
		if static.Len() > 0 {
			add(".conffiles_static", static.String())
		}
	}
	return out, nil
}
