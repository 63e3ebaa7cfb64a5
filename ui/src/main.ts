// Entry point of Gantry's UI: applies the saved theme, then mounts the app shell into #app.
import { mount } from "svelte";
import "./app.css";
import App from "./App.svelte";
import { theme } from "./lib/theme.svelte";

theme.init();

const target = document.getElementById("app");
if (target === null) throw new Error("index.html has no #app element");

export default mount(App, { target });
