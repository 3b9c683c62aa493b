package config

import (
	"fmt"
	"strings"
)

// MarkdownTable renders Options as README's configuration tables, one per section type, so the
// documentation cannot drift from the code (a test compares the two).
func MarkdownTable() string {
	var b strings.Builder
	section := ""
	for _, o := range Options() {
		if o.Section != section {
			section = o.Section
			if b.Len() > 0 {
				b.WriteString("\n")
			}
			switch section {
			case "main":
				b.WriteString("`config connmgr 'main'`:\n\n")
			case "uplink":
				b.WriteString("`config uplink 'NETWORK'` (one per uplink, named after its section in `/etc/config/network`):\n\n")
			default:
				fmt.Fprintf(&b, "`config %s`:\n\n", section)
			}
			b.WriteString("| option | default | values | meaning |\n|---|---|---|---|\n")
		}
		def := o.Default
		if def != "" && !strings.ContainsAny(def, "( :,") {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", o.Name, cell(def), cell(o.Values), cell(o.Description))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
