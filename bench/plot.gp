# Throughput and latency per workload, direct to the sink vs through smtpscreen.
# usage: gnuplot -c bench/plot.gp DATA OUT.png
# DATA columns: workload direct_rate through_rate direct_p50 through_p50 direct_p99 through_p99
# ("-" where a leg was not run). Log scales: the workloads span 10 to 20,000 sessions/s.
data = ARG1
set terminal pngcairo size 1200,900 font ",10" noenhanced
set output ARG2
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key outside right top
set xtics rotate by -20 nomirror
set logscale y

set multiplot layout 2,1 title "smtpscreen bench: smtp-sink direct vs through smtpscreen (loopback, 2 shared cores)"

set title "throughput"
set ylabel "sessions/s"
set yrange [1:*]
plot data using 2:xtic(1) title "direct" lc rgb "#4477aa", \
     '' using 3 title "through smtpscreen" lc rgb "#ee6677"

set title "latency (connect to end of session)"
set ylabel "ms"
set yrange [0.1:*]
plot data using 4:xtic(1) title "direct p50" lc rgb "#88aadd", \
     '' using 5 title "through p50" lc rgb "#ffaabb", \
     '' using 6 title "direct p99" lc rgb "#224488", \
     '' using 7 title "through p99" lc rgb "#aa3344"

unset multiplot
