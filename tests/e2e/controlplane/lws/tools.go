//go:build tools

// Package tools pins the LeaderWorkerSet module so that `go build sigs.k8s.io/lws/cmd` resolves it.
package tools

import _ "sigs.k8s.io/lws/pkg/controllers"
