package otelfanout

import (
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures [NewObserver]. No options means the documented
// default of every option.
type Option func(*config)

type config struct {
	tracerProvider trace.TracerProvider // nil: otel.GetTracerProvider()
	meterProvider  metric.MeterProvider // nil: otel.GetMeterProvider()
	attrs          []attribute.KeyValue
}

// WithTracerProvider sets the provider of the observer's tracer. A nil
// provider means the default.
//
// Default: the global provider, [go.opentelemetry.io/otel.GetTracerProvider],
// as it is when NewObserver is called (the global provider delegates to one
// set later with SetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithMeterProvider sets the provider of the observer's meter. A nil
// provider means the default.
//
// Default: the global provider, [go.opentelemetry.io/otel.GetMeterProvider],
// as it is when NewObserver is called (the global provider delegates to one
// set later with SetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithAttributes adds attrs to every span the observer starts and every
// measurement it records: the name of the server an observer is given to,
// say, when one process serves several. They are computed once, with the
// observer's other attributes, and cost nothing per event. Every distinct
// value is a time series of every instrument: give values of few kinds
// only.
//
// Default: none.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, slices.Clone(attrs)...) }
}
