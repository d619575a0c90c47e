package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one field. The Validate methods return their problems joined
// (errors.Join), each a *FieldError; Fields takes them apart again.
type FieldError struct {
	// Field is the field's path below what was validated, in JSON names with list positions:
	// "certFile" from TLSConfig.Validate, "tls.certFile" or "routes[2].target" from
	// Config.Validate. Empty when the problem is the whole of what was validated.
	Field string
	// Problem says what is wrong and what is allowed, without the field's name.
	Problem string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

// Name is Field without list positions ("routes[2].target" is "routes.target"): the key by
// which a caller that does not speak JSON (the CLI, which speaks flags) names the field.
func (e *FieldError) Name() string {
	var b strings.Builder
	inBrackets := false
	for _, r := range e.Field {
		switch {
		case r == '[':
			inBrackets = true
		case r == ']':
			inBrackets = false
		case !inBrackets:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Fields returns the field errors in err (as returned by a Validate method), in order. An error
// that is not a FieldError is returned as one with an empty Field.
func Fields(err error) []*FieldError {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range joined.Unwrap() {
			out = append(out, Fields(e)...)
		}
		return out
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return []*FieldError{{Problem: err.Error()}}
}

// problems collects the field errors of one Validate call.
type problems []error

// add records a problem with field (empty: the whole section).
func (p *problems) add(field, format string, a ...any) {
	*p = append(*p, &FieldError{Field: field, Problem: fmt.Sprintf(format, a...)})
}

// within records the problems a section's Validate found, with the section's path in front of
// their fields: within("tls", ...) turns "certFile" into "tls.certFile", and within("routes[2]",
// ...) turns "target" into "routes[2].target".
func (p *problems) within(section string, err error) {
	for _, fe := range Fields(err) {
		field := section
		switch {
		case fe.Field == "":
		case strings.HasPrefix(fe.Field, "["):
			field += fe.Field
		default:
			field += "." + fe.Field
		}
		*p = append(*p, &FieldError{Field: field, Problem: fe.Problem})
	}
}

// err is the problems joined, or nil.
func (p problems) err() error { return errors.Join(p...) }
