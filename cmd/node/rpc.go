package main

import (
	"io"

	"github.com/warrenmq/warren/rpc/rpccli"
)

func runRPC(args []string, stdout, stderr io.Writer) int {
	return rpccli.Main(args, stdout, stderr)
}
