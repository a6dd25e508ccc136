# bench/results.png: tresor-router against nginx and Portkey (bench/run.sh draws it).
# usage: gnuplot -e "dir='CHART_DIR'; out='results.png'; subtitle='…'" bench/lib/chart.gp
# CHART_DIR holds the TSV files (header lines commented out: a text first row would count as a
# histogram row and shift the bars from their whiskers) bench/lib/report.py writes: cpu.tsv (CPU/request ÷ nginx,
# median lo hi per target), ir.tsv (callgrind Ir/request ÷ nginx), p50.tsv / p99.tsv
# (latency in ms, median lo hi per target; SSE rows = time to first event).
# Bars = median over the rounds, whiskers = min–max across the rounds.
if (!exists("subtitle")) subtitle = ""
set terminal pngcairo size 1800,1200 font "DejaVu Sans,11" noenhanced
set output out
set datafile separator "\t"
set datafile missing "?"

c_direct = "#9e9e9e"; c_nginx = "#2ca02c"; c_portkey = "#ff7f0e"; c_on = "#1f5fa8"; c_off = "#8fbfe6"
set style data histograms
set style fill solid 0.9 border rgb "#404040"
set boxwidth 0.9
set grid ytics mytics lc rgb "#d0d0d0" lw 1
set xtics nomirror scale 0 font ",11"
set ytics nomirror
set key top left horizontal font ",11" samplen 2 opaque box lc rgb "#d0d0d0"
set border 3

# centre of bar I (0-based) of N in cluster X, histogram gap G
bx(x, i, n, g) = x + (i - (n - 1) / 2.0) / (n + g)
fmt(v) = v >= 100 ? sprintf("%.0f", v) : (v >= 10 ? sprintf("%.1f", v) : sprintf("%.2f", v))

# n_wl, n_lat, n_ir (rows of cpu.tsv, p50/p99.tsv, ir.tsv), ir_max: from report.py (stats fails on an empty file).
# x range: the clusters only (histograms otherwise leave an empty cluster's width on the left).
load dir."/meta.gp"
set key maxrows 1

set multiplot layout 2,2 title "tresor-router against nginx (proxy_pass) and Portkey — " . subtitle font ",14"

# ---- 1. CPU per request ÷ nginx -------------------------------------------------------------
set title "Proxy CPU per request ÷ nginx (log scale; bars: median, whiskers: min–max over the rounds)"
set ylabel "CPU time per request, × nginx's"
set xlabel "workload (SSE: per stream)"
set logscale y
set yrange [0.3:cpu_max * 4]   # head room for the value labels and the key
set style histogram errorbars gap 1 lw 1.5
set xrange [-0.6:n_wl - 0.4]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb c_nginx front
set label 1 "nginx = 1" at graph 0.995, first 1 offset 0,0.6 right tc rgb c_nginx front
plot dir."/cpu.tsv" using 2:3:4:xtic(1) title "tresor receipts on" lc rgb c_on, \
     "" using 5:6:7 title "tresor receipts off" lc rgb c_off, \
     "" using 8:9:10 title "Portkey" lc rgb c_portkey, \
     "" using (bx($0, 0, 3, 1)):4:(fmt($2)) with labels offset 0,0.7 font ",9" notitle, \
     "" using (bx($0, 1, 3, 1)):7:(fmt($5)) with labels offset 0,0.7 font ",9" notitle, \
     "" using (bx($0, 2, 3, 1)):10:(fmt($8)) with labels offset 0,0.7 font ",9" notitle
unset arrow 1; unset label 1

# ---- 2. callgrind instructions per request ÷ nginx -----------------------------------------------
set title "Instructions per request ÷ nginx, under callgrind (log scale; does not drift with the VM's speed)"
set ylabel "user-space instructions per request, × nginx's"
set xlabel "workload (same fixed batch for tresor and nginx)"
set logscale y   # transcription with receipts can be ~100x where chat is ~5x
set style histogram clustered gap 1
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb c_nginx front
set label 1 "nginx = 1" at graph 0.995, first 1 offset 0,0.6 right tc rgb c_nginx front
if (n_ir > 0) {
  set xrange [-0.6:n_ir - 0.4]
  set yrange [0.5:(ir_max > 1 ? ir_max : 1) * 2]
  plot dir."/ir.tsv" using 2:xtic(1) title "tresor receipts on" lc rgb c_on, \
       "" using 3 title "tresor receipts off" lc rgb c_off, \
       "" using (bx($0, 0, 2, 1)):2:(fmt($2)) with labels offset 0,0.7 font ",10" notitle, \
       "" using (bx($0, 1, 2, 1)):3:(fmt($3)) with labels offset 0,0.7 font ",10" notitle
} else {
  unset arrow 1; unset label 1
  set label 2 "callgrind not run (BENCH_CALLGRIND=0)" at graph 0.5, graph 0.5 center
  unset xtics; unset ytics; unset key; unset grid
  set xrange [0:1]
  plot 2 notitle lc rgb "white"
  unset label 2
  set xtics nomirror scale 0 font ",11"; set ytics nomirror; set key; set grid ytics mytics lc rgb "#d0d0d0" lw 1
}
unset arrow 1; unset label 1

# ---- 3, 4. latency p50 / p99 -------------------------------------------------------------------
set logscale y
set yrange [*:*]
set style histogram errorbars gap 1 lw 1.2
set xrange [-0.6:n_lat - 0.4]
set xlabel "workload (SSE: time to first event)"
do for [q in "p50 p99"] {
  set title sprintf("Latency %s, ms (log scale; bars: median, whiskers: min–max over the rounds)", q)
  set ylabel sprintf("%s latency, ms", q)
  plot dir."/".q.".tsv" using 2:3:4:xtic(1) title "direct (no proxy)" lc rgb c_direct, \
       "" using 5:6:7 title "nginx" lc rgb c_nginx, \
       "" using 8:9:10 title "Portkey" lc rgb c_portkey, \
       "" using 11:12:13 title "tresor on" lc rgb c_on, \
       "" using 14:15:16 title "tresor off" lc rgb c_off
}
unset multiplot
