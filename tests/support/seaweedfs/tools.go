//go:build tools

// Builds SeaweedFS (`weed`, Apache-2.0) from the Go module proxy: the S3-compatible store that
// `make up` and `make test` keep snapshots in. Its go.sum pins every module by hash.
package tools

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
