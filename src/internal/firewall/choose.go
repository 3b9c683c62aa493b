package firewall

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
)

// Facts are what backend selection looks at.
type Facts struct {
	NFT          bool // nf_tables answers over netlink
	FW4Table     bool // table inet fw4 exists (fw4 is running)
	FW4Installed bool // /sbin/fw4 exists
	IPTables     bool // an iptables command is installed
	// NoIPTBackend: this connmgr was built without the iptables backend (tag noiptables,
	// the build for fw4 images), so iptables is never chosen.
	NoIPTBackend bool
}

const errNoIPTBackend = "firewall_backend iptables: this connmgr is built without the iptables backend " +
	"(the build for fw4 images, tag noiptables); set option firewall_backend to auto or nftables, " +
	"or install the package built for fw3 (make ipk FIREWALL=fw3)"

// Choose picks the backend for the option firewall_backend (auto, nftables
// or iptables). auto takes nftables where fw4 is in use or installed, or
// where there is no iptables; iptables where it exists otherwise (fw3).
func Choose(option string, f Facts) (string, error) {
	switch option {
	case BackendNFT:
		if !f.NFT {
			return "", fmt.Errorf("firewall_backend nftables: the kernel's nf_tables does not answer")
		}
		return BackendNFT, nil
	case BackendIPTables:
		if f.NoIPTBackend {
			return "", errors.New(errNoIPTBackend)
		}
		if !f.IPTables {
			return "", fmt.Errorf("firewall_backend iptables: no iptables command installed")
		}
		return BackendIPTables, nil
	case BackendAuto, "":
	default:
		return "", fmt.Errorf("firewall_backend %q: want auto, nftables or iptables", option)
	}
	switch {
	case f.NFT && (f.FW4Table || f.FW4Installed || !f.IPTables || f.NoIPTBackend):
		return BackendNFT, nil
	case f.IPTables && !f.NoIPTBackend:
		return BackendIPTables, nil
	case f.NoIPTBackend:
		return "", fmt.Errorf("firewall_backend auto: the kernel's nf_tables does not answer, and this connmgr " +
			"is built without the iptables backend (tag noiptables, the build for fw4 images)")
	}
	return "", fmt.Errorf("firewall_backend auto: neither nf_tables nor iptables is usable")
}

// Detect gathers Facts on this system.
func Detect() Facts {
	var f Facts
	if c, err := nftables.New(); err == nil {
		if tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err == nil {
			f.NFT = true
			for _, t := range tables {
				if t.Name == "fw4" {
					f.FW4Table = true
				}
			}
		}
	}
	f.FW4Installed = fileExists("/sbin/fw4")
	f.IPTables = iptablesInstalled()
	f.NoIPTBackend = !iptablesBuilt
	return f
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Open detects the system, chooses a backend for option and opens it.
func Open(option string) (Backend, error) {
	name, err := Choose(option, Detect())
	if err != nil {
		return nil, err
	}
	if name == BackendNFT {
		return NewNFT()
	}
	return openIPT()
}
