// Command fakeubusd runs the Go ubusd of package ubustest on a socket, to
// try connmgr and the ubus CLI on a machine without OpenWrt:
//
//	go run ./internal/ubus/ubustest/fakeubusd -s /tmp/ubus.sock
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/afero/af-conn/internal/ubus/ubustest"
)

func main() {
	sock := flag.String("s", "/var/run/ubus/ubus.sock", "unix socket to listen on")
	verbose := flag.Bool("v", false, "log misbehaving clients")
	flag.Parse()
	opts := &ubustest.Options{}
	if *verbose {
		opts.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	srv, err := ubustest.NewServer(*sock, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeubusd:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
}
