package scitagpolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/go-logr/logr"

	"github.com/scitunnel/scitunnel/controllers/scitagpolicy/egress"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// maxRegistryBytes bounds a fetched registry document. The document travels verbatim into the
// policy's registry ConfigMap and into each tagged tunnel's ConfigMap beside config.json, and
// the API server refuses a ConfigMap over 1 MiB: 960 KiB leaves config.json 64 KiB. (Today's
// scitags.org/api.json is under 10 kB.)
const maxRegistryBytes = 1<<20 - 64<<10

// unreachable opens every fetch failure a policy's status shows. What follows it says only
// what the URL or the document itself shows (scheme, redirect, size, content); whether an
// address was refused, did not answer, or answered with an error status reads the same, so
// that conditions cannot serve as a scanner of what the manager can reach.
const unreachable = "registry unreachable or invalid"

// unreachableHint is the safe part of a network failure: the rules, not which one applied.
const unreachableHint = unreachable + " (the operator fetches it only over https, from addresses " +
	"that are not loopback, link-local, private or in the cluster, unless the chart allows them)"

// fetchError is a fetch failure with a message safe for status; cause is for the log.
type fetchError struct {
	msg   string
	cause error
}

func (e *fetchError) Error() string { return e.msg }
func (e *fetchError) Unwrap() error { return e.cause }

// registryGetter reads registry documents over HTTP with a client that keeps to egress rules.
type registryGetter struct {
	client *http.Client
	rules  egress.Rules
	log    logr.Logger
}

// get fetches and checks the document at rawURL. Its errors are *fetchError.
func (g registryGetter) get(ctx context.Context, rawURL string) (fetchedDocument, error) {
	doc, err := g.fetch(ctx, rawURL)
	if err != nil {
		var fe *fetchError
		if !errors.As(err, &fe) {
			fe = &fetchError{msg: unreachableHint, cause: err}
		}
		g.log.V(1).Info("registry fetch failed", "url", rawURL, "error", fe.cause)
		return fetchedDocument{}, fe
	}
	return doc, nil
}

func (g registryGetter) fetch(ctx context.Context, rawURL string) (fetchedDocument, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fetchedDocument{}, err
	}
	if err := g.rules.CheckScheme(u.Scheme); err != nil {
		return fetchedDocument{}, &fetchError{msg: unreachable + ": the operator fetches only https:// URLs " +
			"(the chart's registry.allowHTTP allows http://)", cause: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fetchedDocument{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := g.client.Do(req)
	if errors.Is(err, egress.ErrRedirectRefused) {
		return fetchedDocument{}, &fetchError{msg: unreachable + ": it redirects to another host or to http, " +
			"which the operator does not follow; name the final URL", cause: err}
	}
	if err != nil {
		return fetchedDocument{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fetchedDocument{}, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistryBytes+1))
	if err != nil {
		return fetchedDocument{}, err
	}
	if len(raw) > maxRegistryBytes {
		return fetchedDocument{}, &fetchError{msg: fmt.Sprintf("%s: the document is larger than %d KiB, "+
			"the most the tunnels' ConfigMaps can carry", unreachable, maxRegistryBytes>>10)}
	}
	reg, err := parseForStatus(raw)
	if err != nil {
		return fetchedDocument{}, &fetchError{msg: unreachable + ": " + err.Error(), cause: err}
	}
	return fetchedDocument{registry: reg, raw: raw}, nil
}

// parseForStatus parses a registry document and refuses names the policy's status cannot hold.
func parseForStatus(raw []byte) (*scitag.Registry, error) {
	reg, err := scitag.Parse(raw)
	if err != nil {
		return nil, err
	}
	if err := checkStatusLimits(reg); err != nil {
		return nil, err
	}
	return reg, nil
}
