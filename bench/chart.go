package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"slices"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Geometry and colours of the chart.
const (
	chartWidth, chartHeight = 1200, 520
	plotLeft, plotRight     = 60, 1180 // x of the plot area
	plotTop, plotBottom     = 80, 450  // y of the plot area
	lineHeight              = 15
)

var (
	white       = color.RGBA{255, 255, 255, 255}
	black       = color.RGBA{0, 0, 0, 255}
	gridGray    = color.RGBA{225, 225, 225, 255}
	textGray    = color.RGBA{90, 90, 90, 255}
	chartSeries = []struct {
		system string
		color  color.RGBA
	}{
		{fanoutName, color.RGBA{31, 119, 180, 255}},
		{grpcName, color.RGBA{255, 127, 14, 255}},
		{yamuxName, color.RGBA{44, 160, 44, 255}},
		{rawName, color.RGBA{150, 150, 150, 255}},
	}
)

// chart draws every figure of every system as grouped bars, each
// normalized to gRPC = 1.0 (the median of the same-run ratios, as in the
// report), and writes it to w as a PNG.
func (r *results) chart(w io.Writer) error {
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, chartHeight))
	fill(img, img.Bounds(), white)

	// The ratios, and the scale: a grid line every 0.5, room above the
	// tallest bar for its label.
	ratios := make([][]float64, len(allFigures))
	top := 1.0
	for i, fig := range allFigures {
		for _, s := range chartSeries {
			x := r.ratio(s.system, grpcName, fig)
			ratios[i] = append(ratios[i], x)
			if !math.IsNaN(x) {
				top = max(top, x)
			}
		}
	}
	top = math.Ceil(top*1.1*2) / 2
	y := func(v float64) int { return plotBottom - int(v/top*(plotBottom-plotTop)) }

	for v := 0.0; v <= top; v += 0.5 {
		c := gridGray
		if v == 1 {
			c = textGray
		}
		fill(img, image.Rect(plotLeft, y(v), plotRight, y(v)+1), c)
		text(img, plotLeft-8-width(fmt.Sprintf("%.1fx", v)), y(v)+4, textGray, fmt.Sprintf("%.1fx", v))
	}

	text(img, plotLeft, 25, black, fmt.Sprintf("%s, normalized to gRPC = 1.0 (medians of %d repetitions, %v per workload)", strings.Join(systemNames, ", "), r.reps, r.duration))
	x := plotLeft
	for _, s := range chartSeries {
		fill(img, image.Rect(x, 42, x+12, 54), s.color)
		text(img, x+18, 53, black, s.system)
		x += 18 + width(s.system) + 30
	}

	group := (plotRight - plotLeft) / len(allFigures)
	bar := group / (len(chartSeries) + 1)
	for i, fig := range allFigures {
		left := plotLeft + i*group + (group-len(chartSeries)*bar)/2
		for j, s := range chartSeries {
			v := ratios[i][j]
			if math.IsNaN(v) {
				continue
			}
			x0 := left + j*bar
			fill(img, image.Rect(x0+2, y(v), x0+bar-2, plotBottom), s.color)
			label := fmt.Sprintf("%.2f", v)
			text(img, x0+(bar-width(label))/2, y(v)-4, black, label)
		}
		better := "higher is better"
		if fig.lower {
			better = "lower is better"
		}
		lines := append(slices.Clone(fig.label), better)
		for k, line := range lines {
			c := black
			if k == len(lines)-1 {
				c = textGray
			}
			center := plotLeft + i*group + group/2
			text(img, center-width(line)/2, plotBottom+20+k*lineHeight, c, line)
		}
	}
	return png.Encode(w, img)
}

func fill(img draw.Image, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// text draws s with its baseline starting at (x, y).
func text(img draw.Image, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// width returns the width of s in pixels.
func width(s string) int {
	return font.MeasureString(basicfont.Face7x13, s).Ceil()
}
