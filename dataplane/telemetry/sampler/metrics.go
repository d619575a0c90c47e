package sampler

import "github.com/prometheus/client_golang/prometheus"

// Collector exports a sampler's state: scitunnel_sampler_up is 0 when s is nil (the sampler is
// off or could not start, e.g. without CAP_NET_RAW), so an alert can tell.
func Collector(s *Sampler) prometheus.Collector { return &collector{s: s} }

type collector struct{ s *Sampler }

var (
	upDesc       = prometheus.NewDesc("scitunnel_sampler_up", "1 when the in-pod sFlow sampler runs.", nil, nil)
	rateDesc     = prometheus.NewDesc("scitunnel_sampler_sampling_rate", "The sampler's 1-in-N rate.", nil, nil)
	samplesDesc  = prometheus.NewDesc("scitunnel_sampler_samples_total", "Packets sampled, per interface.", []string{"interface"}, nil)
	dropsDesc    = prometheus.NewDesc("scitunnel_sampler_kernel_drops_total", "Sampled packets the kernel dropped (receive ring full), per interface.", []string{"interface"}, nil)
	sentDesc     = prometheus.NewDesc("scitunnel_sampler_datagrams_total", "sFlow datagrams built and sent.", nil, nil)
	sendErrsDesc = prometheus.NewDesc("scitunnel_sampler_send_errors_total", "Failed sends of datagrams to a collector.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, rateDesc, samplesDesc, dropsDesc, sentDesc, sendErrsDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.s == nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(rateDesc, prometheus.GaugeValue, float64(st.SamplingRate))
	for _, i := range st.Interfaces {
		ch <- prometheus.MustNewConstMetric(samplesDesc, prometheus.CounterValue, float64(i.Samples), i.Name)
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(i.KernelDrops), i.Name)
	}
	ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(st.DatagramsSent))
	ch <- prometheus.MustNewConstMetric(sendErrsDesc, prometheus.CounterValue, float64(st.SendErrors))
}
