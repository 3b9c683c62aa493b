module github.com/afero/af-conn

go 1.25.0

require (
	github.com/miekg/dns v1.1.73 // indirect
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
