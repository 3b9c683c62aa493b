package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README's configuration table from the code")

const (
	readmePath = "../../../README.md"
	tableStart = "<!-- begin generated: config options -->\n"
	tableEnd   = "<!-- end generated: config options -->\n"
)

// README's configuration table is generated from Options; this test fails when they differ.
// Regenerate with: go test ./internal/config -run TestREADMETable -update
func TestREADMETable(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i := strings.Index(readme, tableStart)
	j := strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q block", strings.TrimSpace(tableStart), strings.TrimSpace(tableEnd))
	}
	want := MarkdownTable()
	got := readme[i+len(tableStart) : j]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(readmePath, []byte(readme[:i+len(tableStart)]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README's configuration table is out of date; run: go test ./internal/config -run TestREADMETable -update")
}

func TestMarkdownTableListsEveryOption(t *testing.T) {
	table := MarkdownTable()
	for _, o := range Options() {
		if !strings.Contains(table, "| `"+o.Name+"` |") {
			t.Errorf("option %s missing from the table", o.Name)
		}
	}
}
