package cgocost

import (
	"os"
	"testing"
)

// TestCallbackCost prints the cost of a callback from a C thread into Go (FASTRPC_BENCH=1;
// skipped otherwise): go test -run TestCallbackCost -v ./internal/cgocost
func TestCallbackCost(t *testing.T) {
	if os.Getenv("FASTRPC_BENCH") == "" {
		t.Skip("a measurement: FASTRPC_BENCH=1 go test -run TestCallbackCost -v ./internal/cgocost")
	}
	for i := 0; i < 3; i++ {
		first, each, err := Callback(200000)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("C thread -> Go callback: first %v, then %v each", first, each)
	}
	t.Logf("Go -> C call: %v each", GoToC(1000000))
}
