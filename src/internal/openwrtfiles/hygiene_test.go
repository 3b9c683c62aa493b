package openwrtfiles

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shellFiles are the files under files/ that a shell runs or sources: those starting with a
// #!/bin/sh line (init scripts' "#!/bin/sh /etc/rc.common" too), *.sh, the hotplug hooks,
// the uci-defaults and the firewall include.
func shellFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filesDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(p)
		if bytes.HasPrefix(b, []byte("#!/bin/sh")) || strings.HasSuffix(p, ".sh") || strings.HasSuffix(p, ".include") ||
			strings.Contains(rel, "/etc/hotplug.d/") || strings.Contains(rel, "/etc/uci-defaults/") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found only %d shell files under %s: %v", len(files), filesDir, files)
	}
	return files
}

func TestShellSyntax(t *testing.T) {
	shells := [][]string{{"sh", "-n"}}
	if p, err := exec.LookPath("busybox"); err == nil {
		shells = append(shells, []string{p, "sh", "-n"})
	}
	for _, f := range shellFiles(t) {
		for _, sh := range shells {
			if out, err := exec.Command(sh[0], append(sh[1:], f)...).CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", strings.Join(sh, " "), f, err, out)
			}
		}
	}
}

// TestShellcheck runs shellcheck as for a POSIX sh (busybox ash semantics; files note where
// they use ash's 'local'). CI must have shellcheck; elsewhere its absence skips the test.
func TestShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("shellcheck is not installed: CI must install it (apt-get install shellcheck)")
		}
		t.Skip("shellcheck is not installed")
	}
	for _, f := range shellFiles(t) {
		if out, err := exec.Command("shellcheck", "-s", "sh", "-x", f).CombinedOutput(); err != nil {
			t.Errorf("shellcheck -s sh %s: %v\n%s", f, err, out)
		}
	}
}
