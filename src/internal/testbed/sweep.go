package testbed

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// namePrefix starts every namespace name a world creates: afc<pid>-<random>-<role>.
const namePrefix = "afc"

var (
	liveMu     sync.Mutex
	live       = map[*World]bool{}
	signalOnce sync.Once
)

// register makes w torn down when the process gets SIGINT or SIGTERM, so an interrupted test
// run leaves nothing behind. It returns the function that unregisters w.
func register(w *World) func() {
	liveMu.Lock()
	live[w] = true
	liveMu.Unlock()
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			liveMu.Lock()
			worlds := make([]*World, 0, len(live))
			for w := range live {
				worlds = append(worlds, w)
			}
			liveMu.Unlock()
			for _, w := range worlds {
				w.Close()
			}
			os.Exit(128 + int(sig.(syscall.Signal)))
		}()
	})
	return func() {
		liveMu.Lock()
		delete(live, w)
		liveMu.Unlock()
	}
}

// sweepStale removes namespaces left by runs whose process is gone (killed with SIGKILL, or a
// crashed test binary). Namespaces of live processes, other test runs among them, stay.
func sweepStale() {
	for _, dir := range []string{"/run/netns", "/etc/netns", runDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			pid, ok := ownerPID(e.Name())
			if !ok || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue
			}
			(&NS{Name: e.Name()}).remove()
			os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
			os.RemoveAll(filepath.Join(runDir, e.Name()))
		}
	}
}

// ownerPID reads the creating process's pid from a namespace name made by this package.
func ownerPID(name string) (int, bool) {
	if !strings.HasPrefix(name, namePrefix) {
		return 0, false
	}
	rest := name[len(namePrefix):]
	i := strings.IndexByte(rest, '-')
	if i <= 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(rest[:i])
	return pid, err == nil && pid > 0
}
