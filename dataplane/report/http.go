package report

import (
	"encoding/json"
	"net/http"
)

// WriteJSON answers a GET with v as indented JSON: how the proxy's admin endpoint and the
// analyzer serve their reports (and their other JSON documents), so both look the same to the
// controller and to a human with curl.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
