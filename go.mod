module github.com/seed-c94cd834/fanout

go 1.26.0

require (
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.25.0 // indirect
)
