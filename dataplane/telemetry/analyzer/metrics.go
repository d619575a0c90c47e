package analyzer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// maxFlowSeries bounds scitag_networks_bps to the fastest flows, so a scan of many addresses
// cannot blow up the scrape.
const maxFlowSeries = 10_000

// collector exports the analyzer's figures at scrape time (a custom collector rather than
// gauges updated per sample: the rates are derived from the window when read).
type collector struct {
	a *Analyzer

	networksBps, tagBps, tagErr, tagSamples, tagBytes              *prometheus.Desc
	datagrams, malformed, gaps, outOfOrder, restarts, samples      *prometheus.Desc
	lost, agentDropped, receiveDropped, flows, overflow, fireflies *prometheus.Desc
	agentDatagrams, agentGaps                                      *prometheus.Desc
	agents, agentsForgotten, refused                               *prometheus.Desc
}

// Collector returns a Prometheus collector of the analyzer's estimates and health counters.
// scitag_networks_bps{src,dst,scitag} (bits per second of tagged flows) is the metric sFlow-RT's
// scitags application exports, so dashboards built on it keep working.
func (a *Analyzer) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		a:               a,
		networksBps:     d("scitag_networks_bps", "Estimated bits per second of a tagged flow (source, destination, scitag), as sFlow-RT's scitags application exports it.", "src", "dst", "scitag"),
		tagBps:          d("scitunnel_sflow_tag_bits_per_second", "Estimated bits per second per tag over the window (scitag=\"unknown\" for untagged traffic).", "scitag"),
		tagErr:          d("scitunnel_sflow_tag_error_percent", "95% error bound of scitunnel_sflow_tag_bits_per_second in percent: 196*sqrt(1/samples) for equal frames, wider for mixed frame sizes.", "scitag"),
		tagSamples:      d("scitunnel_sflow_tag_window_samples", "Samples behind the tag's estimate in the window.", "scitag"),
		tagBytes:        d("scitunnel_sflow_tag_bytes_total", "Estimated bytes per tag since the analyzer started.", "scitag"),
		datagrams:       d("scitunnel_sflow_datagrams_total", "sFlow datagrams decoded."),
		malformed:       d("scitunnel_sflow_malformed_datagrams_total", "sFlow datagrams dropped as malformed, by reason.", "reason"),
		gaps:            d("scitunnel_sflow_sequence_gaps_total", "Datagrams missing from the agents' sequence numbers (lost on the way)."),
		outOfOrder:      d("scitunnel_sflow_out_of_order_datagrams_total", "Duplicated or reordered datagrams."),
		restarts:        d("scitunnel_sflow_agent_restarts_total", "Agent restarts seen (sequence and uptime going back)."),
		samples:         d("scitunnel_sflow_samples_total", "Samples received, by type: flow, counter, skipped (unknown types), invalid (rate 0 or no header).", "type"),
		lost:            d("scitunnel_sflow_lost_samples_total", "Flow samples missing from data sources' sequence numbers."),
		agentDropped:    d("scitunnel_sflow_agent_dropped_samples_total", "Samples the agents report they dropped (sFlow drops field)."),
		receiveDropped:  d("scitunnel_sflow_receive_dropped_datagrams_total", "Datagrams the kernel dropped on the analyzer's socket (receive buffer full)."),
		flows:           d("scitunnel_sflow_flows", "(source, destination, tag) flows in the window."),
		overflow:        d("scitunnel_sflow_flows_overflow_samples_total", "Samples of flows beyond the flow table's limit (counted in the tag totals only)."),
		fireflies:       d("scitunnel_sflow_fireflies_total", "Fireflies received, by result.", "result"),
		agentDatagrams:  d("scitunnel_sflow_agent_datagrams_total", "Datagrams per agent.", "agent"),
		agentGaps:       d("scitunnel_sflow_agent_sequence_gaps_total", "Datagrams missing from one agent's sequence numbers.", "agent"),
		agents:          d("scitunnel_sflow_agents", "Agents tracked (bounded; see scitunnel_sflow_agents_forgotten_total)."),
		agentsForgotten: d("scitunnel_sflow_agents_forgotten_total", "Agents forgotten, by reason: evicted (the table was full; the one heard from longest ago made room), expired (silent too long).", "reason"),
		refused:         d("scitunnel_sflow_refused_datagrams_total", "sFlow datagrams dropped because their source is neither the pod's own sampler nor an allowed agent."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.networksBps, c.tagBps, c.tagErr, c.tagSamples, c.tagBytes, c.datagrams,
		c.malformed, c.gaps, c.outOfOrder, c.restarts, c.samples, c.lost, c.agentDropped, c.receiveDropped,
		c.flows, c.overflow, c.fireflies, c.agentDatagrams, c.agentGaps, c.agents, c.agentsForgotten, c.refused} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	flows := c.a.Flows(0)
	n := 0
	for _, f := range flows.Flows {
		if f.Tag == UnknownTag || n >= maxFlowSeries {
			continue
		}
		n++
		gauge(c.networksBps, f.BitsPerSecond, f.Src, f.Dst, f.Tag)
	}
	gauge(c.flows, float64(len(flows.Flows)))
	for _, t := range c.a.Tags().Tags {
		gauge(c.tagBps, t.BitsPerSecond, t.Tag)
		gauge(c.tagErr, t.ErrorPercent, t.Tag)
		gauge(c.tagSamples, float64(t.Samples), t.Tag)
	}
	for name, t := range c.a.Totals() {
		counter(c.tagBytes, t.Bytes, name)
	}
	h := c.a.Health()
	counter(c.datagrams, float64(h.Datagrams))
	for _, r := range []string{"version", "address_type", "short", "overrun"} {
		counter(c.malformed, float64(h.MalformedByReason[r]), r)
	}
	counter(c.gaps, float64(h.SequenceGaps))
	counter(c.outOfOrder, float64(h.OutOfOrder))
	counter(c.restarts, float64(h.AgentRestarts))
	counter(c.samples, float64(h.FlowSamples), "flow")
	counter(c.samples, float64(h.CounterSamples), "counter")
	counter(c.samples, float64(h.SkippedSamples), "skipped")
	counter(c.samples, float64(h.InvalidSamples), "invalid")
	counter(c.lost, float64(h.LostSamples))
	counter(c.agentDropped, float64(h.AgentDroppedSample))
	counter(c.receiveDropped, float64(h.ReceiveDropped))
	counter(c.overflow, float64(h.FlowsOverflow))
	counter(c.fireflies, float64(h.Fireflies), "accepted")
	counter(c.fireflies, float64(h.FirefliesMalformed), "malformed")
	counter(c.agentsForgotten, float64(h.AgentsEvicted), "evicted")
	counter(c.agentsForgotten, float64(h.AgentsExpired), "expired")
	counter(c.refused, float64(h.Refused))
	agents := c.a.Agents()
	gauge(c.agents, float64(len(agents)))
	for _, ag := range agents {
		counter(c.agentDatagrams, float64(ag.Datagrams), ag.Address)
		counter(c.agentGaps, float64(ag.SequenceGaps), ag.Address)
	}
}
