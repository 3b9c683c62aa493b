// Command runworld is `make run`: it builds a throwaway dual-stack namespace world (device with
// eth0, wlan0 and wwan0, each with IPv4 and IPv6, a router per uplink advertising IPv6 with
// radvd, a cloud with the echo service and DNS on both families), runs connmgr in
// the device namespace on its embedded default configuration with a Go ubusd (package
// ubustest) on a socket in its temporary directory, prints connmgr's ubus events, and lets you
// break and mend uplinks from the keyboard to watch it fail over. Everything is removed on exit or Ctrl-C;
// the host's own routes and firewall are never touched.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// whitelist is what the world's connmgr allows: the seed's production list.
const whitelist = `# af-conn whitelist for make run (the seed's production list)
conclave.afero.io
conclave-stream.afero.io
echo.afero.io
squirrel.usw2prod.afero.io
otacdn.afero.io
otacdn*.afero.io
aft.afero.io
*.afero.io
`

func main() {
	bin := flag.String("connmgr", "build/connmgr", "connmgr `binary` to run")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "runworld:", err)
		os.Exit(1)
	}
}

func run(bin string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	// A dual-stack world: every uplink carries IPv4 and IPv6, the routers advertise their
	// IPv6 default routes with radvd (make setup installs it; without it the gateways are
	// installed as netifd does for a static interface).
	opts := testbed.Options{IPv6: testbed.V6RA}
	w, err := testbed.Build(opts)
	if errors.Is(err, testbed.ErrNoRadvd) {
		fmt.Println("runworld:", err, "- IPv6 default routes installed as netifd does instead")
		opts.IPv6 = testbed.V6Static
		w, err = testbed.Build(opts)
	}
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.StartDNS(append(testbed.DefaultRecords(), testbed.DefaultRecords6()...)); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "afconn-run-")
	if err != nil {
		return err
	}
	w.OnClose(func() error { return os.RemoveAll(dir) })
	// An empty UCI directory: connmgr runs on its embedded default configuration and the
	// default uplinks ethnet=eth0, stanet=wlan0, modemnet=wwan0.
	uciDir := filepath.Join(dir, "config")
	wl := filepath.Join(dir, "whitelist")
	sock := filepath.Join(dir, "ubus.sock")
	if err := os.MkdirAll(uciDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(wl, []byte(whitelist), 0o644); err != nil {
		return err
	}
	// A ubusd for connmgr to publish its object on (unix sockets reach across network
	// namespaces, so it runs here), and a listener that shows connmgr's events.
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		return err
	}
	w.OnClose(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := ubus.NewClient(sock)
	events.Listen(ctx, func(name string, data ubus.Table) {
		j, _ := ubus.FormatJSON(data, false)
		fmt.Printf(">>> ubus event %s %s\n", name, j)
	}, "connmgr.*")
	go events.Run(ctx)

	fmt.Println(w)
	fmt.Printf("connmgr: %s -c %s -w %s -s %s\n", bin, uciDir, wl, sock)
	fmt.Printf("ubus:    %s status -s %s   (also get 65008, set 65008 1, switch wlan0)\n\n", bin, sock)
	p, err := w.Device.Start(os.Stdout, bin, "-c", uciDir, "-w", wl, "-s", sock)
	if err != nil {
		return err
	}
	// Closers run in reverse: connmgr stops (and cleans up after itself) before the
	// namespaces go.
	w.OnClose(func() error { return p.Stop(10 * time.Second) })

	help()
	in := bufio.NewScanner(os.Stdin)
	carrier := map[string]bool{"eth0": true, "wlan0": true, "wwan0": true}
	blackhole := false
	lines := make(chan string)
	go func() {
		for in.Scan() {
			lines <- strings.TrimSpace(in.Text())
		}
		close(lines)
	}()
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("connmgr exited: %v", p.Wait(0))
		case line, ok := <-lines:
			if !ok {
				// No terminal (stdin closed): keep running until Ctrl-C or connmgr exits.
				lines = nil
				continue
			}
			switch line {
			case "1", "2", "3":
				dev := []string{"eth0", "wlan0", "wwan0"}[line[0]-'1']
				carrier[dev] = !carrier[dev]
				if err := w.SetCarrier(dev, carrier[dev]); err != nil {
					fmt.Println(err)
				}
				fmt.Printf(">>> %s cable %s\n", dev, map[bool]string{true: "plugged in", false: "pulled"}[carrier[dev]])
			case "b", "6":
				// b: both families; 6: IPv6 only (eth0 keeps IPv4).
				fam := map[string]int{"b": 0, "6": 6}[line]
				blackhole = !blackhole
				if err := w.SetFault("eth0", testbed.Fault{Blackhole: blackhole, Family: fam}); err != nil {
					fmt.Println(err)
				}
				what := map[int]string{0: "upstream", 6: "IPv6 upstream"}[fam]
				fmt.Printf(">>> eth0 %s %s\n", what, map[bool]string{true: "black-holed (link stays up)", false: "restored"}[blackhole])
			case "r":
				out, _ := w.Device.Run("ip", "-4", "route", "show", "default")
				out6, _ := w.Device.Run("ip", "-6", "route", "show", "default")
				fmt.Print(">>> IPv4 default routes in the device:\n", out, ">>> IPv6 default routes in the device:\n", out6)
			case "s":
				out, err := w.Device.Run(bin, "status", "-s", sock)
				if err != nil {
					fmt.Println(">>> status:", err)
				} else {
					fmt.Print(out)
				}
			case "q":
				return nil
			case "":
			default:
				help()
			}
		}
	}
}

func help() {
	fmt.Print(`
keys (then Enter):  1/2/3 pull or plug the eth0/wlan0/wwan0 cable   b black-hole eth0's upstream
                    6 black-hole eth0's IPv6 only (b or 6 again restores)
                    s status   r default routes (both families)   q quit (Ctrl-C also removes everything)

`)
}
