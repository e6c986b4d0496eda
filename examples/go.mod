module github.com/seed-c94cd834/fanout/examples

go 1.26.0

require (
	github.com/miekg/dns v1.1.73
	github.com/seed-c94cd834/fanout v0.0.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	golang.org/x/image v0.47.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require (
	github.com/hashicorp/yamux v0.1.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
)

replace github.com/seed-c94cd834/fanout => ../
